"""The lab, kept out of the library: everything that builds and drives a test cluster on this
machine, on top of ``metalxdp.rig`` (the real API server, network namespaces, FRR, processes).

* ``spec``: the lab's addresses, AS numbers and metallb.io resources (pure data; the Vagrant VMs
  render from it too);
* ``cluster``: ``Lab`` (``metalxdp lab up/status/down``): control plane, nodes, router, client,
  then metalxdp's controller and agents as processes;
* ``standins``: what a real cluster's kubelet, CNI and kube-proxy would do (backend pods, the
  kube-proxy stand-in process);
* ``tools``: what the demo, the lab tests and the benchmarks do with a running lab;
* ``demo``: ``metalxdp demo`` / ``make demo``;
* ``vagrant_render``: renders ``vagrant/generated/`` from ``spec``;
* ``bfd_rig``: FRR/BIRD BFD peers and a packet sniffer for the BFD tests and benchmark.

Imports go one way: demo -> tools -> cluster -> standins/spec -> metalxdp.rig (checked by
tests/unit/test_imports.py); the lab starts the controller and agents as processes and imports
neither.
"""
