"""The ESP32 BMS firmware."""

VERSION = "0.4.0"
