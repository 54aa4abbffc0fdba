"""The cycle's values into the input-register image (bms.regmap), once a
cycle (bms.cycle); the event window only after an event was logged.
Allocation-free but for the event window.
"""
from bms import params as P
from bms import regmap as M
from bms.regmap import MAX_CELLS, MAX_TEMPS
from bms.afe import TEMP_OPEN, TEMP_SHORT
from bms.events import AT_UPLINK
from bms.gen.packed import SOC_HIGH_ROW, SOC_LOW_ROW, SOC_WINDOW_WARN_ROWS, STORAGE_HIGH_ROW, STORAGE_LOW_ROW


def publish(cy):
    """Copy this cycle's values into the input-register image."""
    m = cy.meas
    ir = cy.ir
    pr = cy.protection
    ir.set_u16(M.IR_CELL_COUNT, m.cells)
    ir.set_u32(M.IR_PACK_MV, m.pack_mv)
    ir.set_u32(M.IR_CURRENT_MA, m.current_ma)
    ir.set_u16(M.IR_CELL_MIN_MV, m.cell_min_mv)
    ir.set_u16(M.IR_CELL_MAX_MV, m.cell_max_mv)
    ir.set_u16(M.IR_CELL_SPREAD_MV, m.cell_max_mv - m.cell_min_mv)
    ir.set_u16(M.IR_CELL_MIN_NUM, m.cell_min_idx + 1 if m.cells else 0)
    ir.set_u16(M.IR_CELL_MAX_NUM, m.cell_max_idx + 1 if m.cells else 0)
    i = 0
    while i < MAX_CELLS:
        ir.set_u16(M.IR_CELL_MV + i, m.cell_mv[i] if i < m.cells else 0)
        i += 1
    fitted = cy.values[P.P_TEMP_SENSORS]
    i = 0
    while i < MAX_TEMPS:
        t = m.temp_dc[i] if i < m.temps and fitted & (1 << i) else M.TEMP_INVALID
        if t == TEMP_OPEN or t == TEMP_SHORT:
            t = M.TEMP_INVALID
        ir.set_u16(M.IR_TEMP_DC + i, t)
        i += 1
    # CTRL2's CHG_ON/DSG_ON are bits 0/1, the same as FET_CHG/FET_DSG
    ir.set_u16(M.IR_FET_FLAGS, m.fets | (M.FET_DIODE if m.fets & cy.diode_fet else 0))
    ir.set_u16(M.IR_AFE_STAT, cy.afe_stat)
    ir.set_u32(M.IR_PROTECT_FLAGS, pr.protect_flags)
    ir.set_u32(M.IR_WARN_FLAGS, pr.warn_flags)
    ir.set_u16(M.IR_CHG_OFF_REASON, pr.chg_reason)
    ir.set_u16(M.IR_DSG_OFF_REASON, pr.dsg_reason)
    ir.set_u32(M.IR_LATCHED_FLAGS, pr.latched())
    ir.set_u32(M.IR_UPTIME_S, cy.uptime_s)
    ir.set_u16(M.IR_MEAS_COUNT, cy.meas_count)
    ir.set_u16(M.IR_AFE_CRC_ERRORS, min(cy.afe.crc_errors, 0xFFFF))
    ir.set_u16(M.IR_AFE_BUS_ERRORS, min(cy.afe.bus_errors, 0xFFFF))
    ir.set_u16(M.IR_BALANCE_MASK, m.balance_mask)
    s = cy.soc
    if s is not None and cy.soc_started:
        ir.set_u16(M.IR_SOC_DPCT, s.soc_dpct)
        ir.set_u16(M.IR_SOH_DPCT, s.soh_dpct)
        ir.set_u16(M.IR_TTE_MIN, s.tte_min)
        ir.set_u16(M.IR_TTF_MIN, s.ttf_min)
        ir.set_u32(M.IR_REMAINING_MAH, s.remaining_mah)
        ir.set_u32(M.IR_FULL_CAPACITY_MAH, s.full_capacity_mah)
        ir.set_u32(M.IR_REMAINING_DWH, s.remaining_dwh)
        ir.set_u32(M.IR_CYCLES_DC, s.cycles_dc)
        ir.set_u16(M.IR_CC_OFFSET, s.offset_dlsb)
        ir.set_u32(M.IR_DRAWN_MAH, s.drawn_mah)
        ir.set_u16(M.IR_SOC_RESTS, s.rest_count)
        ir.set_u16(M.IR_SOC_OCV_FIXES, s.ocv_count)
    ir.set_u32(M.IR_DRAW_UA, cy.draw_ua)
    f = pr.protect_flags
    w = 0
    if f & SOC_HIGH_ROW:
        w |= M.SOC_CHG_STOP
    if f & SOC_LOW_ROW:
        w |= M.SOC_DSG_STOP
    if pr.warn_flags & SOC_WINDOW_WARN_ROWS:
        w |= M.SOC_LOW_WARN
    if cy.values[P.P_STORAGE]:
        w |= M.SOC_STORAGE
    if f & STORAGE_HIGH_ROW:
        w |= M.SOC_STORAGE_CHG
    if f & STORAGE_LOW_ROW:
        w |= M.SOC_STORAGE_DSG
    if cy.storage_at_target():
        w |= M.SOC_STORAGE_AT
    if s is not None and cy.soc_started and s.resting():
        w |= M.SOC_REST
    ir.set_u16(M.IR_SOC_STATE, w)
    cy.config.publish_state(cy.last_cycle)
    cy.publish_save_errors()
    life = cy.life
    ir.set_u32(M.IR_LIFE_CHG_MAH, life.chg_mah)
    ir.set_u32(M.IR_LIFE_DSG_MAH, life.dsg_mah)
    ir.set_u32(M.IR_LIFE_ON_S, life.on_s)
    ir.set_u16(M.IR_LIFE_CELL_MAX_MV, life.cell_max_mv)
    ir.set_u16(M.IR_LIFE_CELL_MIN_MV, life.cell_min_mv)
    ir.set_u16(M.IR_LIFE_TEMP_MAX_DC, life.temp_max_dc)
    ir.set_u16(M.IR_LIFE_TEMP_MIN_DC, life.temp_min_dc)
    ir.set_u16(M.IR_LIFE_TRIPS, life.trips)
    ir.set_u16(M.IR_FAULTS, cy.faults)
    ir.set_u16(M.IR_FAULT_LAST, cy.fault_last)
    cy.modes.publish(ir)
    if cy.uplink is not None:
        try:
            cy.uplink.publish(ir)
        except Exception as e:  # noqa: BLE001 - MQTT is not protection
            cy.fault(AT_UPLINK, e)
    if cy.events_dirty:
        publish_events(cy)


def publish_events(cy):
    # runs only after an event was logged: may allocate (newest() tuples)
    cy.events_dirty = False
    ir = cy.ir
    log = cy.log
    ir.set_u32(M.IR_EVENT_SEQ, log.next_seq)
    k = 0
    while k < M.EVENT_WINDOW:
        a = M.IR_EVENTS + k * M.EVENT_WORDS
        rec = log.newest(k)
        if rec is None:
            ir.set_u32(a, 0xFFFFFFFF)
            ir.set_u16(a + 2, 0)
            ir.set_u32(a + 3, 0)
            ir.set_u16(a + 5, 0)
            ir.set_u32(a + 6, 0)
        else:
            ir.set_u32(a, rec[0])
            ir.set_u16(a + 2, rec[1])
            ir.set_u32(a + 3, rec[2])
            ir.set_u16(a + 5, rec[3])
            ir.set_u32(a + 6, rec[4])
        k += 1
