"""Find the enrollment an X.509 chain attests (protocol.md §5), with the store's help.

The rules are pure (attestation/x509_chain.py); this module does the reads. Individual
enrollment first, by registration ID (one indexed read). Otherwise the candidate groups come
from a per-instance index, SHA-256 thumbprint of every certificate that can back an X.509 group
(signing certificates and referenced CA certificates, verified or not) → group IDs, built by
one scan of the instance's groups (Azure allows 100 X.509 groups: one page) and cached with
the engine's TTL (invalidated by every enrollment or certificate change on this node). The
index only proposes: the candidate groups and the CA certificates are re-read from the store
before anything is decided, so a stale index can never make an unverified CA or a deleted
group count. On a miss, the index is rebuilt once from the store, so a group created a moment
ago on another node is found at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from cryptography import x509

from opendps.attestation.x509_chain import (
    CertificatePath,
    GroupAnchors,
    X509Match,
    build_path,
    enrollment_anchors,
    match_enrollment,
    sha256_thumbprint,
)
from opendps.engine.caches import TtlCache
from opendps.engine.ports import Clock
from opendps.model.certificate import CaCertificate
from opendps.model.enrollment import (
    AttestationType,
    EnrollmentGroup,
    IndividualEnrollment,
    X509Attestation,
)
from opendps.store.interface import Store

# Page size when scanning an instance's groups to index the X.509 ones (Azure allows 100
# X.509 groups per instance: one page in practice).
GROUP_PAGE_SIZE = 500


@dataclass(frozen=True, slots=True)
class GroupIndex:
    """Thumbprint → IDs of the groups that certificate may back, and the certificates."""

    groups: dict[str, tuple[str, ...]] = field(default_factory=dict)
    anchors: tuple[x509.Certificate, ...] = ()


class X509Lookup:
    """Individual enrollment or group for a presented chain; raises `ChainRejected`."""

    def __init__(self, store: Store, clock: Clock, ttl_seconds: float) -> None:
        self._store = store
        self._index: TtlCache[str, GroupIndex] = TtlCache(clock, ttl_seconds)

    def invalidate(self, instance_id: str | None = None) -> None:
        self._index.invalidate(instance_id)

    async def match(
        self,
        instance_id: str,
        registration_id: str,
        chain: tuple[x509.Certificate, ...],
        now: datetime,
    ) -> X509Match:
        individual = await self._store.get_individual_enrollment(instance_id, registration_id)
        if individual is not None:
            return await self._match_individual(instance_id, individual, chain, now)
        index, cached = await self._group_index(instance_id, use_cache=True)
        found = await self._match_groups(instance_id, chain, now, index)
        if found is None and cached:
            index, _ = await self._group_index(instance_id, use_cache=False)
            found = await self._match_groups(instance_id, chain, now, index)
        if found is None:
            # No group for any CA on the path: let the pure rules word the refusal.
            return match_enrollment(build_path(chain, now, index.anchors), None, ())
        return found

    async def _match_individual(
        self,
        instance_id: str,
        individual: IndividualEnrollment,
        chain: tuple[x509.Certificate, ...],
        now: datetime,
    ) -> X509Match:
        attestation = individual.spec.attestation.x509
        anchors: tuple[x509.Certificate, ...] = ()
        if attestation is not None and attestation.client_certificates is None:
            anchors = enrollment_anchors(attestation, await self._ca_certificates(instance_id))
        path = build_path(chain, now, anchors)
        return match_enrollment(path, individual, (), anchors)

    async def _match_groups(
        self,
        instance_id: str,
        chain: tuple[x509.Certificate, ...],
        now: datetime,
        index: GroupIndex,
    ) -> X509Match | None:
        """The deciding group, or None when the index knows no group for any CA on the path."""
        path = build_path(chain, now, index.anchors)
        candidate_ids = _candidates(path, index)
        if not candidate_ids:
            return None
        cas = await self._ca_certificates(instance_id)
        groups: list[GroupAnchors] = []
        for group_id in candidate_ids:
            group = await self._store.get_enrollment_group(instance_id, group_id)
            if group is not None:
                groups.append(GroupAnchors(group, enrollment_anchors(_x509(group), cas)))
        # Anchors re-read from the store may complete the path differently (a root uploaded
        # since the index was built): rebuild it with exactly what will be trusted.
        fresh_anchors = tuple(a for g in groups for a in g.anchors)
        return match_enrollment(build_path(chain, now, fresh_anchors), None, groups)

    async def _group_index(self, instance_id: str, *, use_cache: bool) -> tuple[GroupIndex, bool]:
        if use_cache:
            found, cached = self._index.lookup(instance_id)
            if found and cached is not None:
                return cached, True
        cas = await self._ca_certificates(instance_id)
        groups: dict[str, list[str]] = {}
        anchors: dict[str, x509.Certificate] = {}
        after: str | None = None
        while True:
            page = await self._store.list_enrollment_groups(
                instance_id, after=after, limit=GROUP_PAGE_SIZE
            )
            for group in page.items:
                for anchor in enrollment_anchors(_x509(group), cas, verified_only=False):
                    thumbprint = sha256_thumbprint(anchor)
                    anchors[thumbprint] = anchor
                    groups.setdefault(thumbprint, []).append(group.enrollment_group_id)
            if page.next_after is None:
                break
            after = page.next_after
        index = GroupIndex({k: tuple(v) for k, v in groups.items()}, tuple(anchors.values()))
        self._index.store(instance_id, index)
        return index, False

    async def _ca_certificates(self, instance_id: str) -> dict[str, CaCertificate]:
        # At most 25 per instance (model/certificate.py): one small read.
        return {c.name.lower(): c for c in await self._store.list_ca_certificates(instance_id)}


def _x509(group: EnrollmentGroup) -> X509Attestation | None:
    attestation = group.spec.attestation
    return attestation.x509 if attestation.type is AttestationType.X509 else None


def _candidates(path: CertificatePath, index: GroupIndex) -> list[str]:
    ids: dict[str, None] = {}
    for authority in path.authorities:
        for group_id in index.groups.get(sha256_thumbprint(authority), ()):
            ids[group_id] = None
    return list(ids)
