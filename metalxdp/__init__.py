"""metalxdp: a bare-metal LoadBalancer for Kubernetes, driven by MetalLB's metallb.io resources,
with ARP/NDP answered and VIP traffic counted in XDP.

Packages: ``metalxdp`` (shared: config parser, CLI, logging, lab and test rig),
``controller`` (IP allocation, webhook), ``agent`` (XDP dataplane, L2 and BGP announcement).
"""

__version__ = "0.1.0"
