"""The Modbus PLC agent (type ``modbus``) and the PLC simulator (``graphrun plc-sim``).

Modules, one job each: ``regmap`` (the register map and its validation), ``encoding``
(values to registers), ``layout`` (the write requests of one result), ``plc`` (the
guarded Modbus TCP link), ``agent``, ``simulator``, ``sim_agent`` (the simulator inside
a graph) and ``cli``. Verdicts become parts in ``graphrun_agents.part_join``, shared
with the other agents that hand results to a far side.
"""
