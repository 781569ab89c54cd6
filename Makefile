# metalxdp: `make demo` runs the lab demo, `make test` runs the whole test suite.
# Both run `make setup` first, which installs what is missing (idempotent, cached).
SHELL := /bin/bash
VENV ?= $(CURDIR)/.venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
# the pinned Kubernetes binaries (kubectl of the server's minor) before anything else on PATH
export PATH := $(or $(METALXDP_CACHE),/var/cache/metalxdp)/bin:$(VENV)/bin:$(PATH)

.PHONY: setup demo test unit integration bench clean lab-down

setup:
	@bash scripts/setup.sh

demo: setup
	@$(VENV)/bin/metalxdp demo

# MetalLB's controller is built too (cached): tests/integration/test_peer_parity.py runs it
test: setup metallb
	@$(PY) -m pytest $(PYTEST_ARGS)

unit: setup
	@$(PY) -m pytest tests/unit $(PYTEST_ARGS)

integration: setup
	@$(PY) -m pytest tests/integration $(PYTEST_ARGS)

bench: setup
	@for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

# the metalxdp, pause and backend images without a Docker engine (docs/image.md); cached
.PHONY: image
image:
	@bash scripts/image.sh

# MetalLB's controller and speaker (pinned in scripts/metallb/VERSION) built from Go modules,
# for side-by-side runs and the parity test in `make test`; cached (a second run builds nothing)
.PHONY: metallb
metallb:
	@bash scripts/metallb/build.sh

# every side-by-side benchmark against MetalLB (scripts/metallb/VERSION, built from Go modules):
# webhook verdicts, controller allocation, controller SIGKILLs, ARP under flood (XDP vs the
# speaker), BGP announce stages (process labs), L2 failover + SIGKILLs + BGP + footprint +
# DaemonSet rollout and the migration on the cluster lab; each prints both figures and the
# ratio and writes bench/results/peer_*.json; bench/peer_summary.py then prints every row of
# both, with the ratio, from those files
PEER_BENCHES = peer_validation peer_controller "controller_chaos --impl both --kills 10" \
	peer_arp_flood peer_bgp_stages peer_l2_failover peer_migration
.PHONY: bench-peer
bench-peer: setup metallb
	@for b in $(PEER_BENCHES); do \
		echo "== bench/$$b"; s=$$(date +%s); $(PY) bench/$${b%% *}.py $$(echo "$$b" | cut -s -d' ' -f2-) || exit 1; \
		echo "== bench/$$b took $$(( $$(date +%s) - s )) s"; done
	@$(PY) bench/peer_summary.py

# what metalxdp costs per node (memory, CPU, cold start to first ARP; cluster lab) and per
# packet (the XDP program in BPF_PROG_TEST_RUN); writes bench/results/{footprint,xdp_prog_ns}.json
.PHONY: footprint
footprint: setup
	@for b in footprint xdp_prog_ns; do echo "== bench/$$b.py"; $(PY) bench/$$b.py || exit 1; done

lab-down:
	@$(VENV)/bin/metalxdp lab down || true

clean: lab-down
	rm -rf $(VENV) .pytest_cache
