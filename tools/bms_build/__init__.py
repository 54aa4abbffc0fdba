"""The device build: the firmware folded and compiled for the board
(build, constfold), the generated tables (tablegen), micropython-lib's
pinned modules (deps), and the copy to a board (deploy). Host-only; the
simulator (bms_sim) runs what this builds."""
