"""The firmware's register map (bms.regmap) as the host sees it: JSON rows,
and decoding of register blocks into engineering values."""
from bms import regmap as M

TABLES = (("input", M.INPUT_REGS), ("holding", M.HOLDING_REGS))


def rows():
    """Every register row as a dict, input registers first, by address."""
    out = []
    for table, regs in TABLES:
        for addr, name, typ, count, scale_exp, unit, access, desc in regs:
            out.append({
                "name": name,
                "address": addr,
                "table": table,
                "type": typ,
                "count": count,
                "scale": 10.0 ** scale_exp if scale_exp else 1,
                "unit": unit,
                "access": access,
                "description": desc,
            })
    return out


def span(regs):
    """(first address, number of registers) covering a table."""
    end = max(r[0] + M.WORDS[r[2]] * r[3] for r in regs)
    return 0, end


def _value(words, i, typ):
    if typ in ("uint16", "int16"):
        v = words[i]
        if typ == "int16" and v & 0x8000:
            v -= 0x10000
        return v
    v = (words[i] << 16) | words[i + 1]
    if typ == "int32" and v & 0x80000000:
        v -= 0x100000000
    return v


def decode(regs, words, base=0):
    """{name: raw value, or list of raw values for arrays} from a register block."""
    out = {}
    for addr, name, typ, count, *_ in regs:
        i = addr - base
        step = M.WORDS[typ]
        vals = [_value(words, i + k * step, typ) for k in range(count)]
        out[name] = vals if count > 1 else vals[0]
    return out


def scaled(regs, raw):
    """Engineering values (raw * 10**scale_exp) keyed by name."""
    out = {}
    for addr, name, typ, count, scale_exp, *_ in regs:
        v = raw[name]
        f = 10.0 ** scale_exp
        if isinstance(v, list):
            out[name] = [x * f if scale_exp else x for x in v]
        else:
            out[name] = v * f if scale_exp else v
    return out


def fault_names(bits):
    return [name for bit, name, _ in M.FAULT_BITS if bits & bit]
