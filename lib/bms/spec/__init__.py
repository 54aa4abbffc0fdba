"""Host-only: the declarative tables (parameters, input registers,
protection rows) and their words, read by bmsctl, the docs, the generators
and the tests. Never on the device (the build leaves this folder out by
rule); the firmware reads the tables packed, from bms.gen."""
