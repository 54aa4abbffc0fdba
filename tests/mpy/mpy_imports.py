# Under the MicroPython unix port: import every firmware module named on the
# command line, then exercise the bits that differ between the two VMs.
import sys

failed = []
for name in sys.argv[1:]:
    try:
        __import__(name)
    except Exception as e:
        failed.append("%s: %r" % (name, e))

from bms.config import Config

c = Config()
c.load_text("chemistry=lfp\ncells=4\ncapacity_mah=10000\nafe_addr=0x18\nbogus\n")
if not (c.configured() and c.cell_channels == 0x17 and c.afe_addr == 0x18 and len(c.errors) == 1):
    failed.append("config parse: %r %r" % (c.cell_channels, c.errors))

import machine

if not hasattr(machine, "EVENTS"):
    failed.append("the fake machine module did not override the built-in one")
else:
    from bms.boards.esp32 import Board

    b = Board()
    b.serial.write(b"\x01\x02", 2)
    if ("uart.write", b"\x01\x02") not in machine.EVENTS:
        failed.append("esp32 board: write did not reach the UART: %r" % machine.EVENTS)

if failed:
    print("FAIL")
    for f in failed:
        print(f)
    sys.exit(1)
print("OK", len(sys.argv) - 1)
