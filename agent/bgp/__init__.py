"""BGP mode of the agent: what to announce (``advertise``, pure), how ExaBGP is configured
(``config_render``, pure), the ExaBGP driver (``exabgp.BGPSpeaker``), ServiceBGPStatus objects
(``status``, pure) and the speaker's metrics."""
