# Under the MicroPython unix port: import every firmware module named on the
# command line, then exercise the bits that differ between the two VMs.
import sys

failed = []
for name in sys.argv[1:]:
    try:
        __import__(name)
    except Exception as e:
        failed.append("%s: %r" % (name, e))

from bms import params as P

from bms import paramload as PL

c = P.Params()
PL.load_text(c, "chemistry=lfp\ncells=4\ncapacity_mah=10000\nafe_addr=0x18\nbogus\ncell_ov_mv=3620\n")
v = c.values
if not (c.configured() and v[P.P_CELL_CHANNELS] == 0x17 and v[P.P_AFE_ADDR] == 0x18 and len(c.errors) == 1
        and v[P.P_CELL_OV_MV] == 3620 and v[P.P_PACK_OV_MV] == 4 * 3625 and v[P.P_CHG_OC_MA] == 10000):
    failed.append("params parse: %r %r" % (list(v), c.errors))

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
