"""The OPC UA agent (type ``opcua``), with asyncua.

Modules, one job each: ``params`` (the graph's parameters and their validation),
``values`` (a result as OPC UA values), ``loop`` (asyncua's event loop beside the
agent's thread), ``link`` (the guarded client connection: security, user, reads,
writes, subscriptions), ``security`` (policies, certificates, users), ``client`` (client
mode: results to a PLC's or SCADA's nodes), ``inputs`` (subscribed changes as messages),
``space`` (server mode: the line's state as an address space), ``agent``, ``simulator``,
``sim_agent`` (the simulator inside a graph) and ``cli`` (``graphrun opcua-sim``).
Verdicts become parts in ``graphrun_agents.part_join``, as in the Modbus agent.
"""
