"""A stand-in for the ESP32 port's `network` module: the Wi-Fi interfaces'
power, recorded in machine.EVENTS."""
import machine

STA_IF = 0
AP_IF = 1

_ACTIVE = [False, False]


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
