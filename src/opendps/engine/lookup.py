"""Find and attest a device: ID scope → instance, then enrollment + SAS verification.

Symmetric keys (protocol.md §2): the token's signature is checked over `sr` as sent (sas.py);
its decoded `sr` must be `{idScope}/registrations/{registrationId}` (case-insensitive); it must
not have expired beyond a bounded skew; the enrollment's primary key, then its secondary, must
have signed it. An individual enrollment for the registration ID decides alone. Otherwise the
device belongs to whichever symmetric-key group's *derived* key (HMAC(groupKey, registrationId),
§2.3) verifies the token. The device never names its group, so a first registration tries every
symmetric-key group of the instance (enabled or disabled, so a disabled group's device hears
`disabled`, not 401); the group found is remembered (in memory, and in the registration state)
and tried first next time. The group that matches is always re-read from the store before it
is trusted, so the cached group list never decides anything.

One read transaction serves the common registration: the device's registration state, its
individual enrollment and the group it most likely belongs to (the remembered one, else the one
of a short cached list whose derived key verifies the token) are read together
(Store.get_device_records); that fresh group row then stands in for the re-read above. The
order in which groups are tried, and so which one matches, is the same as without the guess.

Every refusal is the same 401 UNAUTHORIZED: a device cannot learn whether the ID scope, the
enrollment or the key was wrong (as Azure). The reason goes to the log.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from opendps.attestation.sas import SasToken, check_expiry, parse_sas_token, verify_with_keys
from opendps.attestation.symmetric import derive_device_key
from opendps.attestation.x509_chain import ChainRejected, X509Match, check_leaf
from opendps.engine.api import Credential, EngineSettings, SasCredential, X509Credential
from opendps.engine.caches import LruMemo, TtlCache
from opendps.engine.ports import Clock
from opendps.engine.refusal import refuse
from opendps.engine.tpm import TpmChallenges
from opendps.engine.x509_lookup import X509Lookup
from opendps.model.enrollment import (
    AttestationType,
    EnrollmentGroup,
    EnrollmentSpec,
    IndividualEnrollment,
)
from opendps.model.errors import DpsError
from opendps.model.hub import LinkedHub
from opendps.model.ids import registration_key
from opendps.model.instance import Instance
from opendps.model.registration import RegistrationState
from opendps.model.tpm import TpmChallenge
from opendps.store.interface import Store

logger = logging.getLogger(__name__)

# Page size when listing an instance's groups to find the symmetric-key ones (Azure allows 100
# symmetric-key and 100 X.509 groups: one page in practice).
GROUP_PAGE_SIZE = 500
# A first registration guesses its group from the cached list only when the list is this short:
# each group costs a key derivation (~15 µs) that an individually enrolled device would pay for
# nothing; a few cost less than the read the guess saves.
GUESS_MAX_GROUPS = 8
ID_SCOPE_LENGTH = 11  # `0ne` + 8 hex digits


@dataclass(frozen=True, slots=True)
class AttestedDevice:
    """A device whose credential verified against `enrollment`."""

    instance: Instance
    registration_id: str  # as the device spelt it in this request
    enrollment: IndividualEnrollment | EnrollmentGroup
    # The keys the device holds: the enrollment's, or derived from the group's (primary, secondary).
    # Empty for X.509 devices, which hold a certificate instead (`x509`).
    device_keys: tuple[str, str] = ("", "")
    # X.509 devices: the leaf they presented and the CA that matched (protocol.md §5).
    x509: X509Match | None = None
    # TPM devices: the challenge whose key signed their token (engine/tpm.py).
    tpm: TpmChallenge | None = None

    @property
    def spec(self) -> EnrollmentSpec:
        return self.enrollment.spec

    @property
    def enrollment_group_id(self) -> str | None:
        if isinstance(self.enrollment, EnrollmentGroup):
            return self.enrollment.enrollment_group_id
        return None

    @property
    def attestation_type(self) -> AttestationType:
        return self.enrollment.spec.attestation.type


def check_device_token(
    credential: Credential | None,
    id_scope: str,
    registration_id: str,
    now_epoch: float,
    skew_seconds: int,
) -> SasToken:
    """Everything about a device token that needs no store: form, `sr`, expiry. Raises 401."""
    if not isinstance(credential, SasCredential):
        raise refuse("no credential", id_scope=id_scope, registration_id=registration_id)
    try:
        token = parse_sas_token(credential.token)
    except DpsError:
        raise refuse(
            "malformed SAS token", id_scope=id_scope, registration_id=registration_id
        ) from None
    expected = f"{id_scope}/registrations/{registration_id}"
    if token.resource.lower() != expected.lower():
        raise refuse(
            "token sr names another device", id_scope=id_scope, registration_id=registration_id
        )
    try:
        check_expiry(token, now_epoch, skew_seconds=skew_seconds)
    except DpsError:
        raise refuse(
            "SAS token expired", id_scope=id_scope, registration_id=registration_id
        ) from None
    return token


def check_device_credential(
    credential: Credential | None,
    id_scope: str,
    registration_id: str,
    now: datetime,
    skew_seconds: int,
) -> SasToken | X509Credential:
    """A SAS token (form, `sr`, expiry) or a TLS client chain (leaf CN and validity), checked
    as far as no store is needed. Raises 401."""
    if isinstance(credential, X509Credential) and credential.chain:
        try:
            check_leaf(credential.chain, registration_id, now)
        except ChainRejected as rejected:
            raise refuse(
                rejected.reason, id_scope=id_scope, registration_id=registration_id
            ) from None
        return credential
    return check_device_token(credential, id_scope, registration_id, now.timestamp(), skew_seconds)


def normalise_id_scope(id_scope: str) -> str:
    """ID scopes are `0ne` + upper-case hex; devices sometimes type them in another case."""
    if len(id_scope) == ID_SCOPE_LENGTH:
        return id_scope[:3].lower() + id_scope[3:].upper()
    return id_scope


def _symmetric_keys(spec: EnrollmentSpec) -> tuple[str, str] | None:
    keys = spec.attestation.symmetric_key
    if spec.attestation.type is not AttestationType.SYMMETRIC_KEY or keys is None:
        return None
    return keys.primary_key, keys.secondary_key


def _derived_keys(group: EnrollmentGroup, registration_id: str) -> tuple[str, str] | None:
    keys = _symmetric_keys(group.spec)
    if keys is None:
        return None
    try:
        return derive_device_key(keys[0], registration_id), derive_device_key(
            keys[1], registration_id
        )
    except ValueError:  # a key that is not base64 verifies nothing
        return None


class EnrollmentLookup:
    """Instance and enrollment resolution with the engine's caches."""

    def __init__(self, store: Store, clock: Clock, settings: EngineSettings) -> None:
        self._store = store
        self._clock = clock
        ttl = settings.cache_ttl_seconds
        self._x509 = X509Lookup(store, clock, ttl)
        self.tpm = TpmChallenges(store, clock, settings.tpm_challenge_ttl_seconds)
        self._instances: TtlCache[str, Instance | None] = TtlCache(clock, ttl)
        self._hubs: TtlCache[str, tuple[LinkedHub, ...]] = TtlCache(clock, ttl)
        self._groups: TtlCache[str, tuple[EnrollmentGroup, ...]] = TtlCache(clock, ttl)
        self._memo: LruMemo[tuple[str, str], str] = LruMemo()

    def invalidate(self, instance_id: str | None = None) -> None:
        """Forget cached instances, and the hubs and groups of `instance_id` (or of all)."""
        self._instances.invalidate()
        self._hubs.invalidate(instance_id)
        self._groups.invalidate(instance_id)
        self._x509.invalidate(instance_id)

    async def instance(self, id_scope: str) -> Instance | None:
        scope = normalise_id_scope(id_scope)
        found, cached = self._instances.lookup(scope)
        if found:
            return cached
        instance = await self._store.get_instance_by_id_scope(scope)
        self._instances.store(scope, instance)
        return instance

    async def linked_hubs(self, instance_id: str, *, fresh: bool = False) -> tuple[LinkedHub, ...]:
        """The instance's linked hubs, from the cache unless `fresh`."""
        if not fresh:
            found, cached = self._hubs.lookup(instance_id)
            if found and cached is not None:
                return cached
        hubs = tuple(await self._store.list_linked_hubs(instance_id))
        self._hubs.store(instance_id, hubs)
        return hubs

    async def attest(
        self, instance: Instance, registration_id: str, token: SasToken | X509Credential
    ) -> tuple[AttestedDevice, RegistrationState | None]:
        """The enrollment this token or chain proves membership of, and the device's
        registration state. Raises DpsError(401) otherwise. A token never matches an X.509
        enrollment, a chain never a symmetric one."""
        if isinstance(token, X509Credential):
            state = await self._store.get_registration_state(instance.id, registration_id)
            return await self._attest_x509(instance, registration_id, token), state
        guess = self._likely_group(instance.id, registration_id, token)
        records = await self._store.get_device_records(instance.id, registration_id, group_id=guess)
        individual, state = records.individual, records.state
        if individual is not None and individual.spec.attestation.type is AttestationType.TPM:
            challenge = await self.tpm.verify(
                instance, registration_id, individual, token, unused=False
            )
            return AttestedDevice(instance, registration_id, individual, tpm=challenge), state
        if individual is not None:
            keys = _symmetric_keys(individual.spec)
            if keys is None or not verify_with_keys(token, list(keys)):
                raise refuse(
                    "individual enrollment does not verify",
                    id_scope=instance.id_scope,
                    registration_id=registration_id,
                )
            return AttestedDevice(instance, registration_id, individual, keys), state
        # Groups read fresh in this attestation (the guess, or None if it no longer exists).
        fresh = {registration_key(guess): records.group} if guess is not None else {}
        hint = state.enrollment_group_id if state is not None else None
        device = await self._attest_in_group(instance, registration_id, token, hint, fresh)
        if device is None:
            raise refuse(
                "no enrollment verifies",
                id_scope=instance.id_scope,
                registration_id=registration_id,
            )
        return device, state

    def _likely_group(self, instance_id: str, registration_id: str, token: SasToken) -> str | None:
        """The group to read along with the device's records: the remembered one, else the
        first of the cached list (when short) whose derived key verifies the token. A guess
        only; it is checked against the fresh row like any other candidate."""
        remembered = self._memo.get((instance_id, registration_key(registration_id)))
        if remembered is not None:
            return remembered
        found, groups = self._groups.lookup(instance_id)
        if not found or groups is None or len(groups) > GUESS_MAX_GROUPS:
            return None
        for group in groups:
            keys = _derived_keys(group, registration_id)
            if keys is not None and verify_with_keys(token, list(keys)):
                return group.enrollment_group_id
        return None

    async def _attest_x509(
        self, instance: Instance, registration_id: str, credential: X509Credential
    ) -> AttestedDevice:
        try:
            match = await self._x509.match(
                instance.id, registration_id, credential.chain, self._clock.now()
            )
        except ChainRejected as rejected:
            raise refuse(
                rejected.reason, id_scope=instance.id_scope, registration_id=registration_id
            ) from None
        return AttestedDevice(instance, registration_id, match.enrollment, x509=match)

    async def _attest_in_group(
        self,
        instance: Instance,
        registration_id: str,
        token: SasToken,
        hint_group_id: str | None,
        fresh: dict[str, EnrollmentGroup | None],
    ) -> AttestedDevice | None:
        memo_key = (instance.id, registration_key(registration_id))
        for group_id in dict.fromkeys(g for g in (self._memo.get(memo_key), hint_group_id) if g):
            device = await self._confirm(instance, registration_id, token, group_id, fresh)
            if device is not None:
                return device
        # The cached list first; on a miss, once more from the store, so a group created a
        # moment ago (on any node) is found at once rather than after the cache expires.
        groups, cached = await self._symmetric_groups(instance.id, use_cache=True)
        device = await self._scan(instance, registration_id, token, groups, fresh)
        if device is None and cached:
            groups, _ = await self._symmetric_groups(instance.id, use_cache=False)
            device = await self._scan(instance, registration_id, token, groups, fresh)
        if device is not None and device.enrollment_group_id is not None:
            self._memo.put(memo_key, device.enrollment_group_id)
        else:
            self._memo.forget(memo_key)
        return device

    async def _scan(
        self,
        instance: Instance,
        registration_id: str,
        token: SasToken,
        groups: tuple[EnrollmentGroup, ...],
        fresh: dict[str, EnrollmentGroup | None],
    ) -> AttestedDevice | None:
        for group in groups:
            group_id = group.enrollment_group_id
            # A group already read fresh is checked on its current keys alone.
            if registration_key(group_id) not in fresh:
                keys = _derived_keys(group, registration_id)
                if keys is None or not verify_with_keys(token, list(keys)):
                    continue
            device = await self._confirm(instance, registration_id, token, group_id, fresh)
            if device is not None:
                return device
        return None

    async def _confirm(
        self,
        instance: Instance,
        registration_id: str,
        token: SasToken,
        group_id: str,
        fresh: dict[str, EnrollmentGroup | None],
    ) -> AttestedDevice | None:
        """Check the token against the group's current keys: read now, or earlier in this
        attestation (`fresh`), never taken from a cache."""
        key = registration_key(group_id)
        if key in fresh:
            group = fresh[key]
        else:
            group = await self._store.get_enrollment_group(instance.id, group_id)
        if group is None:
            return None
        keys = _derived_keys(group, registration_id)
        if keys is None or not verify_with_keys(token, list(keys)):
            return None
        return AttestedDevice(instance, registration_id, group, keys)

    async def _symmetric_groups(
        self, instance_id: str, *, use_cache: bool
    ) -> tuple[tuple[EnrollmentGroup, ...], bool]:
        """The instance's symmetric-key groups, and whether they came from the cache."""
        if use_cache:
            found, cached = self._groups.lookup(instance_id)
            if found and cached is not None:
                return cached, True
        groups: list[EnrollmentGroup] = []
        after: str | None = None
        while True:
            page = await self._store.list_enrollment_groups(
                instance_id, after=after, limit=GROUP_PAGE_SIZE
            )
            groups.extend(g for g in page.items if _symmetric_keys(g.spec) is not None)
            if page.next_after is None:
                break
            after = page.next_after
        result = tuple(groups)
        self._groups.store(instance_id, result)
        return result, False
