"""The controller's IP allocator: which LoadBalancer IP(s) a Service gets, from which pool.

Pure on purpose (MetalLB's ``internal/allocator`` is the model): no Kubernetes client, no I/O,
only ``ipaddress`` values and small frozen dataclasses, so it is table-tested in milliseconds
and the controller's reconcile loop stays a thin shell around it.

``Allocator`` keeps the assignments and hands out addresses with MetalLB's rules (section B of
the feature inventory): requested IPs, then the ``metallb.io/address-pool`` pool, then the
"pinned" pools (serviceAllocation, by priority), then every other autoAssign pool; inside a pool
the CIDRs in spec order and the lowest usable address first. Its input, ``ServiceSpec``, comes
from the one Service adapter, ``metalxdp.service``.

Speed: addresses are plain ints. Each CIDR keeps a "hint" (every address below it is in use,
buggy, or waiting in a min-heap of released addresses), so finding the lowest free address is
amortised O(1) and an IPv6 /64 is never enumerated.
"""
from __future__ import annotations

import bisect
import heapq
import ipaddress
from dataclasses import dataclass
from typing import Iterable, Mapping, Optional, Sequence

from metalxdp.config.types import Config, IPAddress, IPNetwork, Pool, confuses_buggy_firmware
from metalxdp.service import PREFER_DUAL_STACK, REQUIRE_DUAL_STACK, SINGLE_STACK, ServiceSpec, parse_ip

__all__ = ["MAX_INT64", "Allocation", "AllocationError", "PoolCounters", "PoolStatus", "Allocator"]

# Kubernetes status fields are int64; MetalLB reports "enormous" IPv6 pools as MaxInt64.
MAX_INT64 = (1 << 63) - 1


# --- results and errors -----------------------------------------------------------------------

@dataclass(frozen=True)
class Allocation:
    """The outcome of ``allocate``/``assign``.

    new: False when the service simply keeps what it had (no IPAllocated event needed).
    cleared / previous_ips: the service's earlier IPs were dropped first and why
    (``differentIPRequested``, ``differentPoolRequested``, ``ipFamilyChanged``,
    ``notAllowedByConfig``): the controller emits ClearAssignment.
    added: PreferDualStack gained its missing family on this call (IPAllocated "additional").
    additional_failed: PreferDualStack could not get the missing family (AdditionalAssignFailed).
    """
    ips: tuple[IPAddress, ...]
    pool_name: str
    new: bool = True
    cleared: Optional[str] = None
    previous_ips: tuple[IPAddress, ...] = ()
    added: Optional[IPAddress] = None
    additional_failed: Optional[str] = None


class AllocationError(Exception):
    """No address for the service. ``reason`` is the event reason to emit (``AllocationFailed``
    for allocate; ``ClearAssignment`` for assign, whose caller drops the stale status);
    ``code`` the machine-readable cause:

    notAllowedByConfig (IP in no pool), noAddress, tooManyIPs, sameFamily, familyMismatch,
    notEnoughClusterIPs, incompatiblePool, poolMismatch, unknownPool, sharingNotAllowed (one
    side has no sharing key), sharingKeyMismatch, backendKeyMismatch, portConflict,
    noAvailableIPs.

    ``cleared``/``previous_ips``: set when allocate dropped the service's old IPs before failing.
    """

    def __init__(self, reason: str, message: str, code: str):
        self.reason, self.message, self.code = reason, message, code
        self.cleared: Optional[str] = None
        self.previous_ips: tuple[IPAddress, ...] = ()
        super().__init__(f"{reason} ({code}): {message}")


@dataclass(frozen=True)
class PoolCounters:
    """The metallb_allocator_* gauges of one pool."""
    addresses_total: int = 0
    ipv4_addresses_total: int = 0
    ipv6_addresses_total: int = 0
    addresses_in_use_total: int = 0
    ipv4_addresses_in_use_total: int = 0
    ipv6_addresses_in_use_total: int = 0
    # MetalLB registers this gauge and never sets it; here it is what its help says: services
    # holding an address of the pool (two services sharing one IP count twice)
    services_allocated_total: int = 0


@dataclass(frozen=True)
class PoolStatus:
    """IPAddressPool.status as MetalLB writes it."""
    assigned_ipv4: int = 0
    assigned_ipv6: int = 0
    available_ipv4: int = 0
    available_ipv6: int = 0


# --- internal state ---------------------------------------------------------------------------

# Addresses are ints; IPv6 ones carry this bit so the two families never collide in one dict.
_V6 = 1 << 128


def _ipkey(ip: IPAddress) -> int:
    return int(ip) | _V6 if ip.version == 6 else int(ip)


def _ip_of(k: int) -> IPAddress:
    return ipaddress.IPv6Address(k ^ _V6) if k & _V6 else ipaddress.IPv4Address(k)


class _Range:
    """One CIDR of a pool and the cursor that finds its lowest free address.

    Invariant: every address in [lo, hint) is in use, buggy, or in ``freed``. ``freed`` is a
    min-heap of addresses released below the hint; entries that got used again are stale and
    dropped lazily.
    """
    __slots__ = ("family", "lo", "hi", "flag", "avoid_buggy", "hint", "freed")

    def __init__(self, cidr: IPNetwork, avoid_buggy: bool):
        self.family = cidr.version
        self.flag = _V6 if cidr.version == 6 else 0
        # MetalLB hands out every address of the CIDR, network and broadcast included.
        self.lo = int(cidr.network_address)
        self.hi = int(cidr.broadcast_address)
        self.avoid_buggy = avoid_buggy and cidr.version == 4
        self.hint = self.lo
        self.freed: list[int] = []

    def lowest_free(self, used: Mapping[int, object]) -> Optional[int]:
        flag = self.flag
        freed = self.freed
        while freed:
            x = freed[0]
            if (x | flag) in used:
                heapq.heappop(freed)
                continue
            return x | flag
        h, hi = self.hint, self.hi
        if self.avoid_buggy:
            while h <= hi and ((h | flag) in used or (h & 0xFF) in (0, 0xFF)):
                h += 1
        else:
            while h <= hi and (h | flag) in used:
                h += 1
        self.hint = h
        return (h | flag) if h <= hi else None

    def contains_key(self, k: int) -> bool:
        return (k & _V6) == self.flag and self.lo <= (k & ~_V6) <= self.hi

    def released(self, k: int) -> None:
        x = k & ~_V6
        if x < self.hint:
            heapq.heappush(self.freed, x)


def _usable_count(cidr: IPNetwork, avoid_buggy: bool) -> int:
    n = cidr.num_addresses
    if not avoid_buggy or cidr.version != 4:
        return n
    if cidr.prefixlen <= 24:
        return n - 2 * (n // 256)           # a .0 and a .255 in every /24
    first, last = cidr.network_address, cidr.broadcast_address
    return n - confuses_buggy_firmware(first) - (last != first and confuses_buggy_firmware(last))


class _PoolState:
    __slots__ = ("pool", "name", "ranges", "families", "cap_v4", "cap_v6", "cap_total",
                 "in_use_v4", "in_use_v6", "services")

    def __init__(self, pool: Pool):
        self.pool = pool
        self.name = pool.name
        self.ranges = [_Range(c, pool.avoid_buggy_ips) for c in pool.cidrs]
        self.families = frozenset(r.family for r in self.ranges)
        # Counted like MetalLB's poolCount: a CIDR with >= 62 host bits makes the count MaxInt64.
        caps = {4: 0, 6: 0}
        huge = {4: False, 6: False}
        for c in pool.cidrs:
            if c.max_prefixlen - c.prefixlen >= 62:
                huge[c.version] = True
            caps[c.version] += _usable_count(c, pool.avoid_buggy_ips and c.version == 4)
        self.cap_v4 = MAX_INT64 if huge[4] else min(caps[4], MAX_INT64)
        self.cap_v6 = MAX_INT64 if huge[6] else min(caps[6], MAX_INT64)
        self.cap_total = min(self.cap_v4 + self.cap_v6, MAX_INT64)
        self.in_use_v4 = 0
        self.in_use_v6 = 0
        self.services = 0     # services allocated from this pool

    def range_for(self, k: int) -> Optional[_Range]:
        for r in self.ranges:
            if r.contains_key(k):
                return r
        return None


class _IPUse:
    """Who holds one address: the sharing key they agreed on, and which ports each uses."""
    __slots__ = ("sharing", "backend", "holders", "ports", "pool", "rng")

    def __init__(self, sharing: Optional[str], backend: str, pool: _PoolState, rng: _Range):
        self.sharing = sharing
        self.backend = backend
        self.holders: dict[str, frozenset] = {}     # svc key -> its ports
        self.ports: dict[tuple[str, int], str] = {}  # (proto, port) -> svc key
        self.pool = pool
        self.rng = rng


class _SharedIndex:
    """The addresses held under one (sharing key, backend key), sorted, for services that may
    join them. ``skip`` remembers, per port set, an address below which every indexed address
    already uses one of those ports, so many services with one key and the same port do not
    rescan each other's addresses (which would be quadratic)."""
    __slots__ = ("keys", "skip")
    _MAX_SKIP = 256   # distinct port sets remembered; forgetting is always safe

    def __init__(self):
        self.keys: list[int] = []
        self.skip: dict[frozenset, int] = {}

    def _lower_skips(self, k: int) -> None:
        for ps, s in self.skip.items():
            if k < s:
                self.skip[ps] = k

    def add(self, k: int) -> None:
        i = bisect.bisect_left(self.keys, k)
        if i == len(self.keys) or self.keys[i] != k:
            self.keys.insert(i, k)
            self._lower_skips(k)

    def remove(self, k: int) -> None:
        # Dropping an address keeps "everything below skip clashes" true.
        i = bisect.bisect_left(self.keys, k)
        if i < len(self.keys) and self.keys[i] == k:
            del self.keys[i]

    def ports_freed(self, k: int) -> None:
        self._lower_skips(k)

    def lowest_compatible(self, lo: int, hi: int, ports: frozenset,
                          used: Mapping[int, _IPUse]) -> Optional[int]:
        """The lowest indexed address in [lo, hi] where none of ``ports`` is taken."""
        keys = self.keys
        s = self.skip.get(ports, 0)
        i0 = bisect.bisect_left(keys, s)
        i = i0 if s >= lo else bisect.bisect_left(keys, lo)
        n = len(keys)
        found = None
        while i < n and keys[i] <= hi:
            owners = used[keys[i]].ports
            if not any(p in owners for p in ports):
                found = keys[i]
                break
            i += 1
        if i0 == bisect.bisect_left(keys, max(lo, s)):
            # The scan ran contiguously from the old skip point: everything before keys[i] clashes.
            if ports not in self.skip and len(self.skip) >= self._MAX_SKIP:
                self.skip.clear()
            self.skip[ports] = keys[i] if i < n else _NO_ADDRESS
        return found


# Above every address key (IPv6 keys carry bit 128).
_NO_ADDRESS = 1 << 130


@dataclass
class _Alloc:
    pool: str
    ips: tuple[IPAddress, ...]
    keys: tuple[int, ...]
    ports: frozenset
    sharing: Optional[str]
    backend: str


def _sharing_problem(use: _IPUse, sharing: Optional[str], backend: str) -> Optional[tuple[str, str]]:
    """MetalLB's sharingOK: (code, message) when the new user may not join the existing ones."""
    if not use.sharing:
        return "sharingNotAllowed", "existing service does not allow sharing"
    if not sharing:
        return "sharingNotAllowed", "new service does not allow sharing"
    if use.sharing != sharing:
        return ("sharingKeyMismatch",
                f"sharing key {sharing!r} does not match existing sharing key {use.sharing!r}")
    if use.backend != backend:
        return ("backendKeyMismatch",
                f"backend key {backend!r} does not match existing backend key {use.backend!r}")
    return None


def _pool_order_key(p: Pool):
    # Lower priority number first, 0 (unset) last. Ties are broken by name: MetalLB leaves them
    # to Go's map order (random), a deterministic order is strictly better for users and tests.
    prio = p.service_allocation.priority if p.service_allocation else 0
    return (prio <= 0, prio, p.name)


def _compatible(pool: Pool, svc: ServiceSpec) -> bool:
    """MetalLB's isPoolCompatibleWithService, with namespaceSelectors matched against the
    namespace's labels here instead of being resolved to names at config time."""
    sa = pool.service_allocation
    if sa is None:
        return True
    if sa.namespaces or sa.namespace_selectors:
        if svc.namespace not in sa.namespaces and not any(
                s.matches(svc.namespace_labels) for s in sa.namespace_selectors):
            return False
    if sa.service_selectors and not any(s.matches(svc.labels) for s in sa.service_selectors):
        return False
    return True


def _family_name(fams: Sequence[int]) -> str:
    return "dual" if len(fams) == 2 else f"ipv{fams[0]}"


# --- the allocator ----------------------------------------------------------------------------

class Allocator:
    """Tracks pools and the services' addresses; hands out addresses with MetalLB's rules.

    Not thread-safe: the controller calls it from its single reconcile loop.
    """

    def __init__(self, pools: Optional[Mapping[str, Pool]] = None):
        self._pools: dict[str, _PoolState] = {}
        self._pinned: list[_PoolState] = []     # pools with serviceAllocation, in priority order
        self._fallback: list[_PoolState] = []   # autoAssign pools without serviceAllocation, by name
        self._allocs: dict[str, _Alloc] = {}    # svc key -> alloc
        self._used: dict[int, _IPUse] = {}      # address key -> its users
        # (sharing key, backend key) -> the addresses a sharing service may join.
        self._shared: dict[tuple[str, str], _SharedIndex] = {}
        # Which pool an address belongs to is Config.pool_for_ip, as in the agent's decisions.
        self._config = Config()
        self._state_of: dict[int, _PoolState] = {}  # id(pool) -> its state
        if pools:
            self.set_pools(pools)

    # -- configuration --

    def set_pools(self, pools: Mapping[str, Pool]) -> list[str]:
        """Replace the pools. Returns (sorted) keys of services whose addresses are no longer in
        any pool: they are now unassigned (the controller emits ClearAssignment and allocates
        again). Every other assignment is kept, even if its pool changed or no longer suits the
        service: an address in use is only taken away when the configuration excludes it."""
        old = self._pools
        new: dict[str, _PoolState] = {}
        for name, pool in pools.items():
            prev = old.get(name)
            # Reuse an unchanged pool's cursors: no rescan after an unrelated config change.
            new[name] = prev if prev is not None and prev.pool == pool else _PoolState(pool)
        self._pools = new
        self._config = Config(pools={name: st.pool for name, st in new.items()})
        self._state_of = {id(st.pool): st for st in new.values()}
        self._pinned = sorted((s for s in new.values() if s.pool.service_allocation is not None),
                              key=lambda s: _pool_order_key(s.pool))
        self._fallback = sorted((s for s in new.values()
                                 if s.pool.auto_assign and s.pool.service_allocation is None),
                                key=lambda s: s.name)

        gone = sorted(svc for svc, a in self._allocs.items()
                      if self._pool_for_keys(a.ips) is None)
        for svc in gone:
            self._unassign(svc)

        # Re-home every used address (its pool may be new or renamed) and recount.
        for st in new.values():
            st.in_use_v4 = st.in_use_v6 = st.services = 0
        for k, use in self._used.items():
            st = self._pool_for_key(k)
            assert st is not None  # addresses outside every pool were unassigned above
            use.pool, use.rng = st, st.range_for(k)
            if k & _V6:
                st.in_use_v6 += 1
            else:
                st.in_use_v4 += 1
        for a in self._allocs.values():
            st = self._used[a.keys[0]].pool
            a.pool = st.name
            st.services += 1
        return gone

    # -- queries --

    def ips_of(self, key: str) -> tuple[IPAddress, ...]:
        a = self._allocs.get(key)
        return a.ips if a else ()

    def pool_of(self, key: str) -> Optional[str]:
        a = self._allocs.get(key)
        return a.pool if a else None

    def services_on(self, ip: IPAddress) -> tuple[str, ...]:
        use = self._used.get(_ipkey(ip))
        return tuple(sorted(use.holders)) if use else ()

    def pool_for_ip(self, ip: IPAddress) -> Optional[str]:
        p = self._config.pool_for_ip(ip)
        return p.name if p else None

    def counters(self, pool_name: str) -> PoolCounters:
        """The metrics of a pool (zeros for an unknown pool, as MetalLB's CountersForPool)."""
        st = self._pools.get(pool_name)
        if st is None:
            return PoolCounters()
        return PoolCounters(
            addresses_total=st.cap_total,
            ipv4_addresses_total=st.cap_v4,
            ipv6_addresses_total=st.cap_v6,
            addresses_in_use_total=st.in_use_v4 + st.in_use_v6,
            ipv4_addresses_in_use_total=st.in_use_v4,
            ipv6_addresses_in_use_total=st.in_use_v6,
            services_allocated_total=st.services,
        )

    def pool_status(self, pool_name: str) -> PoolStatus:
        st = self._pools.get(pool_name)
        if st is None:
            return PoolStatus()
        return PoolStatus(
            assigned_ipv4=st.in_use_v4,
            assigned_ipv6=st.in_use_v6,
            available_ipv4=st.cap_v4 - st.in_use_v4,
            available_ipv6=st.cap_v6 - st.in_use_v6,
        )

    # -- changes --

    def release(self, key: str) -> bool:
        """Forget the service's addresses (service deleted, no longer a LoadBalancer, ...).
        Returns whether it had any."""
        return self._unassign(key)

    def assign(self, svc: ServiceSpec, ips: Iterable) -> Allocation:
        """Record that ``svc`` holds ``ips`` (re-learning status.loadBalancer.ingress after a
        restart). Checks that the addresses lie in one pool, fit the service's families and do
        not clash with the current holders (sharing key, backend key, ports); raises
        AllocationError(reason "ClearAssignment") otherwise, leaving the state untouched.

        Deliberately not re-checked: autoAssign and the pool's serviceAllocation, so that a
        restart keeps exactly the assignments a running controller would keep.
        """
        addrs = tuple(ip if isinstance(ip, (ipaddress.IPv4Address, ipaddress.IPv6Address))
                      else parse_ip(str(ip)) for ip in ips)
        fams = self._families(svc, reason="ClearAssignment")
        try:
            self._check_shape(addrs)
            got = tuple(sorted(ip.version for ip in addrs))
            if got != tuple(sorted(fams)) and not (
                    svc.ip_family_policy == PREFER_DUAL_STACK and len(fams) == 2 and len(addrs) == 1):
                raise AllocationError(
                    "AllocationFailed",
                    f"{[str(i) for i in addrs]} do not match the service's {_family_name(fams)} family",
                    "familyMismatch")
            keys = tuple(_ipkey(ip) for ip in addrs)
            st = self._pool_for_keys(addrs)
            if st is None:
                raise AllocationError("AllocationFailed",
                                      f"{[str(i) for i in addrs]} is not allowed in config",
                                      "notAllowedByConfig")
            self._check_sharing(svc.key, keys, svc.ports, svc.sharing_key, svc.backend_key)
        except AllocationError as e:
            e.reason = "ClearAssignment"
            raise
        had = self._allocs.get(svc.key)
        self._assign(svc.key, st, addrs, keys, svc.ports, svc.sharing_key, svc.backend_key)
        return Allocation(addrs, st.name, new=had is None or set(had.ips) != set(addrs))

    def allocate(self, svc: ServiceSpec) -> Allocation:
        """Give the service its address(es), or keep the ones it has.

        A service that already holds addresses keeps them unless the service itself no longer
        allows them (other requested IPs or pool, other family, its new ports or sharing key
        clash with the co-holders); then they are dropped (Allocation.cleared says why) and a
        fresh allocation follows. PreferDualStack services holding one family get the other from
        the same pool when possible.

        Raises AllocationError (reason "AllocationFailed") when nothing fits.
        """
        fams = self._families(svc, reason="AllocationFailed")
        cleared, previous = None, ()
        existing = self._allocs.get(svc.key)
        if existing is not None:
            cleared = self._existing_problem(svc, existing, fams)
            if cleared is None:
                return self._keep(svc, existing, fams)
            previous = existing.ips
            self._unassign(svc.key)
        try:
            addrs, st = self._allocate_fresh(svc, fams)
        except AllocationError as e:
            e.cleared, e.previous_ips = cleared, previous
            raise
        return Allocation(addrs, st.name, new=True, cleared=cleared, previous_ips=previous)

    # -- internals: allocation --

    def _families(self, svc: ServiceSpec, reason: str) -> tuple[int, ...]:
        fams = tuple(svc.ip_families) or (4,)
        if svc.cluster_ips == 1 or svc.ip_family_policy == SINGLE_STACK:
            fams = fams[:1]
        if svc.ip_family_policy == REQUIRE_DUAL_STACK and len(fams) < 2:
            raise AllocationError(reason, "RequireDualStack needs two clusterIPs",
                                  "notEnoughClusterIPs")
        return fams

    def _existing_problem(self, svc: ServiceSpec, a: _Alloc, fams) -> Optional[str]:
        if svc.requested_ips and set(svc.requested_ips) != set(a.ips):
            return "differentIPRequested"
        if svc.pool_name and svc.pool_name != a.pool:
            return "differentPoolRequested"
        have = tuple(sorted(ip.version for ip in a.ips))
        if have != tuple(sorted(fams)) and not (
                svc.ip_family_policy == PREFER_DUAL_STACK and len(fams) == 2 and len(a.ips) == 1):
            return "ipFamilyChanged"
        try:
            self._check_sharing(svc.key, a.keys, svc.ports, svc.sharing_key, svc.backend_key)
        except AllocationError:
            return "notAllowedByConfig"
        return None

    def _keep(self, svc: ServiceSpec, a: _Alloc, fams) -> Allocation:
        st = self._pools[a.pool]
        # Refresh ports and keys in place (the service may have changed them compatibly).
        self._assign(svc.key, st, a.ips, a.keys, svc.ports, svc.sharing_key, svc.backend_key)
        if not (svc.ip_family_policy == PREFER_DUAL_STACK and len(fams) == 2 and len(a.ips) == 1):
            return Allocation(a.ips, a.pool, new=False)
        # PreferDualStack holding one family: try the other one from the same pool, every time
        # (MetalLB's AllocateFromPoolForAdditionalFamily; a failure is only informational).
        missing = 6 if a.ips[0].version == 4 else 4
        k = self._find_in_pool(st, missing, svc)
        if k is None:
            return Allocation(a.ips, a.pool, new=False, additional_failed=(
                f"no available IPs in pool {a.pool!r} for ipv{missing} IPFamily"))
        extra = _ip_of(k)
        ips, keys = a.ips + (extra,), a.keys + (k,)
        self._assign(svc.key, st, ips, keys, svc.ports, svc.sharing_key, svc.backend_key)
        return Allocation(ips, st.name, new=True, added=extra)

    def _allocate_fresh(self, svc: ServiceSpec, fams) -> tuple[tuple[IPAddress, ...], _PoolState]:
        # (1) requested addresses
        if svc.requested_ips:
            addrs = tuple(svc.requested_ips)
            self._check_shape(addrs)
            if tuple(sorted(ip.version for ip in addrs)) != tuple(sorted(fams)):
                raise AllocationError(
                    "AllocationFailed",
                    f"requested loadBalancer IP(s) {[str(i) for i in addrs]} does not match "
                    f"the ipFamily of the service", "familyMismatch")
            keys = tuple(_ipkey(ip) for ip in addrs)
            st = self._pool_for_keys(addrs)
            if st is None:
                raise AllocationError("AllocationFailed",
                                      f"{[str(i) for i in addrs]} is not allowed in config",
                                      "notAllowedByConfig")
            if not _compatible(st.pool, svc):
                raise AllocationError("AllocationFailed",
                                      f"pool {st.name} not compatible for ip assignment",
                                      "incompatiblePool")
            if svc.pool_name and svc.pool_name != st.name:
                raise AllocationError(
                    "AllocationFailed",
                    f"requested loadBalancer IP(s) {[str(i) for i in addrs]} is not compatible "
                    f"with requested address pool {svc.pool_name}", "poolMismatch")
            self._check_sharing(svc.key, keys, svc.ports, svc.sharing_key, svc.backend_key)
            self._assign(svc.key, st, addrs, keys, svc.ports, svc.sharing_key, svc.backend_key)
            return addrs, st

        # (2) the pool named by metallb.io/address-pool: autoAssign does not matter
        if svc.pool_name:
            st = self._pools.get(svc.pool_name)
            if st is None:
                raise AllocationError("AllocationFailed", f"unknown pool {svc.pool_name!r}",
                                      "unknownPool")
            keys = self._pick_in_pool(st, fams, svc)
            if keys is None:
                raise AllocationError(
                    "AllocationFailed",
                    f"no available IPs in pool {st.name!r} for {_family_name(fams)} IPFamily",
                    "noAvailableIPs")
            if not _compatible(st.pool, svc):
                raise AllocationError("AllocationFailed",
                                      f"pool {st.name} not compatible for ip assignment",
                                      "incompatiblePool")
            return self._commit(svc, st, keys), st

        # (3) pinned pools by priority, (4) every other autoAssign pool
        pinned = [st for st in self._pinned if st.pool.auto_assign and _compatible(st.pool, svc)]
        for candidates in (pinned, self._fallback):
            found = self._best_pool(candidates, fams, svc)
            if found is not None:
                st, keys = found
                return self._commit(svc, st, keys), st
        raise AllocationError("AllocationFailed", "no available IPs", "noAvailableIPs")

    def _commit(self, svc: ServiceSpec, st: _PoolState, keys: tuple[int, ...]):
        addrs = tuple(_ip_of(k) for k in keys)
        self._assign(svc.key, st, addrs, keys, svc.ports, svc.sharing_key, svc.backend_key)
        return addrs

    def _pick_in_pool(self, st: _PoolState, fams, svc: ServiceSpec) -> Optional[tuple[int, ...]]:
        """MetalLB's selectIPsForFamilyAndPolicy for one pool: IPv4 first, then IPv6."""
        if len(fams) == 1:
            k = self._find_in_pool(st, fams[0], svc)
            return (k,) if k is not None else None
        v4 = self._find_in_pool(st, 4, svc)
        v6 = self._find_in_pool(st, 6, svc)
        if v4 is not None and v6 is not None:
            return (v4, v6)
        if svc.ip_family_policy == PREFER_DUAL_STACK:
            if v4 is not None:
                return (v4,)
            if v6 is not None:
                return (v6,)
        return None

    def _best_pool(self, pools: Sequence[_PoolState], fams, svc: ServiceSpec):
        """MetalLB's findBestPoolForService: the first pool that serves every family; for
        PreferDualStack failing that the first pool with the primary family, then the first
        with the other one."""
        if len(fams) == 1:
            fam = fams[0]
            for st in pools:
                if fam in st.families:
                    k = self._find_in_pool(st, fam, svc)
                    if k is not None:
                        return st, (k,)
            return None
        prefer = svc.ip_family_policy == PREFER_DUAL_STACK
        primary = secondary = None
        for st in pools:
            v4 = self._find_in_pool(st, 4, svc) if 4 in st.families else None
            if v4 is None and not prefer:
                continue
            v6 = self._find_in_pool(st, 6, svc) if 6 in st.families else None
            if v4 is not None and v6 is not None:
                return st, (v4, v6)
            if not prefer:
                continue
            got = {4: v4, 6: v6}
            if primary is None and got[fams[0]] is not None:
                primary = (st, (got[fams[0]],))
            if secondary is None and got[fams[1]] is not None:
                secondary = (st, (got[fams[1]],))
        return primary or secondary

    def _find_in_pool(self, st: _PoolState, family: int, svc: ServiceSpec) -> Optional[int]:
        """The lowest address of ``family`` in the pool the service may use: CIDRs in spec
        order; a free address, or (with a sharing key) one already shared under the same keys
        whose ports do not clash."""
        used = self._used
        shared = self._shared.get((svc.sharing_key, svc.backend_key)) if svc.sharing_key else None
        for r in st.ranges:
            if r.family != family:
                continue
            free = r.lowest_free(used)
            if shared is not None:
                hi = free - 1 if free is not None else r.hi | r.flag
                k = shared.lowest_compatible(r.lo | r.flag, hi, svc.ports, used)
                if k is not None:
                    return k
            if free is not None:
                return free
        return None

    # -- internals: bookkeeping --

    @staticmethod
    def _check_shape(addrs: Sequence[IPAddress]) -> None:
        if not addrs:
            raise AllocationError("AllocationFailed", "no address given", "noAddress")
        if len(addrs) > 2:
            raise AllocationError("AllocationFailed",
                                  f"more than two addresses {[str(i) for i in addrs]}", "tooManyIPs")
        if len(addrs) == 2 and addrs[0].version == addrs[1].version:
            raise AllocationError("AllocationFailed",
                                  f"{addrs[0]} {addrs[1]} has the same family", "sameFamily")

    def _pool_for_key(self, k: int) -> Optional[_PoolState]:
        p = self._config.pool_for_ip(_ip_of(k))
        return self._state_of[id(p)] if p is not None else None

    def _pool_for_keys(self, addrs) -> Optional[_PoolState]:
        """The one pool holding every address, or None."""
        p = self._config.pool_for_ips(addrs)
        return self._state_of[id(p)] if p is not None else None

    def _check_sharing(self, svc_key: str, keys, ports, sharing, backend) -> None:
        for k in keys:
            use = self._used.get(k)
            if use is None:
                continue
            problem = _sharing_problem(use, sharing, backend)
            if problem is not None:
                # The same service alone on the address may change its own key in place.
                others = sorted(h for h in use.holders if h != svc_key)
                if others:
                    code, why = problem
                    raise AllocationError(
                        "AllocationFailed",
                        f"can't use {_ip_of(k)} for {svc_key!r}: {why}; address in use by "
                        f"{','.join(others)}", code)
            for p in ports:
                cur = use.ports.get(p)
                if cur is not None and cur != svc_key:
                    raise AllocationError(
                        "AllocationFailed",
                        f"port {p[0]}/{p[1]} is already in use on {_ip_of(k)} by {cur!r}",
                        "portConflict")

    def _assign(self, svc_key: str, st: _PoolState, addrs, keys, ports, sharing, backend) -> None:
        """Record the allocation unconditionally; callers have checked it."""
        # Addresses the service keeps are not released in between: no churn in the free-lists
        # when every resync re-confirms an allocation.
        self._unassign(svc_key, keep=keys)
        ports = frozenset(ports)
        for k in keys:
            use = self._used.get(k)
            if use is None:
                use = _IPUse(sharing, backend, st, st.range_for(k))
                self._used[k] = use
                if k & _V6:
                    st.in_use_v6 += 1
                else:
                    st.in_use_v4 += 1
                self._index_shared(use, k, add=True)
            elif (use.sharing, use.backend) != (sharing, backend):
                # Only reachable when svc is the sole holder (checked): adopt its keys.
                self._index_shared(use, k, add=False)
                use.sharing, use.backend = sharing, backend
                self._index_shared(use, k, add=True)
            use.holders[svc_key] = ports
            for p in ports:
                use.ports[p] = svc_key
        self._allocs[svc_key] = _Alloc(st.name, tuple(addrs), tuple(keys), ports, sharing, backend)
        st.services += 1

    def _unassign(self, svc_key: str, keep: Sequence[int] = ()) -> bool:
        a = self._allocs.pop(svc_key, None)
        if a is None:
            return False
        held = self._pools.get(a.pool)
        if held is not None:   # set_pools recounts after its own unassignments
            held.services -= 1
        for k in a.keys:
            use = self._used[k]
            del use.holders[svc_key]
            for p in a.ports:
                if use.ports.get(p) == svc_key:
                    del use.ports[p]
            if use.holders and use.sharing:
                # Ports freed on an address others still share: it may suit new services again.
                shared = self._shared.get((use.sharing, use.backend))
                if shared is not None:
                    shared.ports_freed(k)
            if not use.holders and k not in keep:
                del self._used[k]
                self._index_shared(use, k, add=False)
                st = use.pool
                if k & _V6:
                    st.in_use_v6 -= 1
                else:
                    st.in_use_v4 -= 1
                if use.rng is not None:
                    use.rng.released(k)
        return True

    def _index_shared(self, use: _IPUse, k: int, add: bool) -> None:
        if not use.sharing:
            return
        idx = (use.sharing, use.backend)
        shared = self._shared.get(idx)
        if add:
            if shared is None:
                shared = self._shared[idx] = _SharedIndex()
            shared.add(k)
        elif shared is not None:
            shared.remove(k)
            if not shared.keys:
                del self._shared[idx]
