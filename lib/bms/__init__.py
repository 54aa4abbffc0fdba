"""The ESP32 BMS firmware."""

VERSION = "0.3.0"
