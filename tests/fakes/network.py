"""A stand-in for the ESP32 port's `network` module: the Wi-Fi interfaces'
power, recorded in machine.EVENTS."""
import machine

STA_IF = 0
AP_IF = 1

_ACTIVE = [False, False]
_JOINED = [False]  # the access point accepted us (tests set it: set_connected)


def set_connected(on):
    _JOINED[0] = bool(on)


class WLAN:
    def __init__(self, interface=STA_IF):
        if interface not in (STA_IF, AP_IF):
            raise ValueError("invalid WLAN interface %r" % (interface,))
        self.interface = interface
        machine.EVENTS.append(("network.WLAN", interface))

    def active(self, on=None):
        if on is None:
            return _ACTIVE[self.interface]
        _ACTIVE[self.interface] = bool(on)
        machine.EVENTS.append(("wlan.active", self.interface, bool(on)))

    def connect(self, ssid=None, key=None):
        # the ESP32 port refuses a connect on an interface that is not active
        if not _ACTIVE[self.interface]:
            raise OSError("Wifi Not Started")
        if not isinstance(ssid, str) or not isinstance(key, str):
            raise TypeError("ssid and key must be str")
        machine.EVENTS.append(("wlan.connect", self.interface, ssid))

    def isconnected(self):
        return _ACTIVE[self.interface] and _JOINED[0]

    def ifconfig(self):
        # (ip, netmask, gateway, dns): zeros until DHCP gave an address, as on the ESP32
        if self.isconnected():
            return ("192.168.4.20", "255.255.255.0", "192.168.4.1", "192.168.4.1")
        return ("0.0.0.0", "0.0.0.0", "0.0.0.0", "0.0.0.0")
