"""Generated modules: the host-only tables of bms.spec packed as bytes for
the device by `python -m bms_build.tablegen`. Never edit them by hand;
tests/firmware/test_packed.py fails when they are not current."""
