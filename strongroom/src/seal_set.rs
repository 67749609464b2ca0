//! [`SealSet`]: one or more auto seals wrapping the same secrets, so that
//! any one of them can unseal (Vault 1.16's multi-seal, "Seal HA").
//!
//! Every secret the core keeps seal-wrapped (the root key at
//! `core/hsm/barrier-unseal-keys`, the recovery key at `core/recovery-key`)
//! is wrapped by each seal of the set and stored once per seal, in one
//! storage entry, so a single write replaces every wrap at once (no torn
//! state between seals):
//!
//! * one seal and nothing else: the seal's own blob, byte for byte what a
//!   single-seal store always held (older stores and tools read it);
//! * otherwise a [`MultiWrap`] JSON document with one slot per seal
//!   (`{"multi_wrap":1,"slots":[{"name","type","blob"}]}`), and, with the
//!   opt-in break-glass, a slot wrapped under the recovery key.
//!
//! Decryption tries the seals by priority (lowest number first) and
//! succeeds if any one works. Encryption wraps with every seal that
//! answers; a seal that is down is left out and reported, and
//! [`SealSet::refresh`] adds it back once it answers again. Each seal's
//! health is tracked for `sys/seal-backend-status` and metrics.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use seal_core::{Seal, SealError, SealType};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use zeroize::Zeroizing;

/// The slot name of the break-glass wrap (root key under the recovery key).
pub(crate) const RECOVERY_SLOT: &str = "recovery-key";
/// The slot type of the break-glass wrap.
pub(crate) const RECOVERY_SLOT_TYPE: &str = "recovery";

/// One auto seal of a multi-seal configuration, as the server's config
/// names it (`seal "awskms" { name = "east" priority = 1 ... }`).
#[derive(Debug, Clone)]
pub struct NamedSeal {
    /// Unique name within the configuration (Vault's `name`; the seal type
    /// when not given).
    pub name: String,
    /// Lower is tried first (Vault's `priority`, 1 = primary).
    pub priority: u32,
    /// The seal itself.
    pub seal: Arc<dyn Seal>,
}

impl NamedSeal {
    /// A seal named after its type with priority 1: the single-seal case.
    pub fn single(seal: Arc<dyn Seal>) -> Self {
        Self {
            name: seal.seal_type().as_str().to_owned(),
            priority: 1,
            seal,
        }
    }
}

/// The stored form of a secret wrapped by several seals.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MultiWrap {
    /// Format marker (1).
    pub(crate) multi_wrap: u32,
    /// One wrap per seal.
    pub(crate) slots: Vec<Slot>,
}

/// One seal's wrap of the secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Slot {
    /// The seal's configured name.
    pub(crate) name: String,
    /// The seal's type (`"awskms"`, `"test"`, or `"recovery"` for the
    /// break-glass slot).
    #[serde(rename = "type")]
    pub(crate) seal_type: String,
    /// The seal's blob, standard base64.
    pub(crate) blob: String,
}

impl Slot {
    pub(crate) fn new(name: &str, seal_type: &str, blob: &[u8]) -> Self {
        Self {
            name: name.to_owned(),
            seal_type: seal_type.to_owned(),
            blob: B64.encode(blob),
        }
    }

    pub(crate) fn bytes(&self) -> Result<Vec<u8>, SealError> {
        B64.decode(self.blob.as_bytes())
            .map_err(|_| SealError::Malformed("a multi-seal slot is not base64"))
    }
}

impl MultiWrap {
    /// Parses stored bytes: a multi-wrap document, or `None` when the bytes
    /// are a single seal's blob. Storage is untrusted: never panics.
    ///
    /// # Errors
    /// [`SealError::Malformed`] for a document that starts like JSON but
    /// is not a valid multi-wrap.
    pub(crate) fn parse(raw: &[u8]) -> Result<Option<Self>, SealError> {
        if raw.first() != Some(&b'{') {
            return Ok(None);
        }
        let doc: Self = serde_json::from_slice(raw)
            .map_err(|_| SealError::Malformed("not a multi-seal document"))?;
        if doc.multi_wrap != 1 {
            return Err(SealError::Malformed(
                "unsupported multi-seal document version",
            ));
        }
        Ok(Some(doc))
    }

    /// Serializes the document.
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        // Plain strings and numbers only: serialization cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub(crate) fn slot(&self, name: &str) -> Option<&Slot> {
        self.slots.iter().find(|s| s.name == name)
    }

    /// Replaces or adds the slot named like `slot`.
    pub(crate) fn put(&mut self, slot: Slot) {
        match self.slots.iter_mut().find(|s| s.name == slot.name) {
            Some(existing) => *existing = slot,
            None => self.slots.push(slot),
        }
    }
}

/// What `sys/seal-backend-status` shows for one seal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealBackendStatus {
    /// The seal's name.
    pub name: String,
    /// The seal's type.
    #[serde(rename = "type")]
    pub seal_type: String,
    /// Its priority (1 = tried first).
    pub priority: u32,
    /// Whether the last call to it succeeded.
    pub healthy: bool,
    /// Always true: the seal was built from its configuration.
    pub configured: bool,
    /// Whether it is a disabled (migration source) seal.
    pub disabled: bool,
    /// Since when it fails (RFC 3339), only when unhealthy.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub unhealthy_since: Option<String>,
    /// The last failure, in operator words, only when unhealthy.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub last_error: Option<String>,
}

#[derive(Debug, Default)]
struct Health {
    /// `None`: never called yet.
    healthy: Option<bool>,
    unhealthy_since: Option<OffsetDateTime>,
    last_error: Option<String>,
}

struct Member {
    name: String,
    priority: u32,
    seal: Arc<dyn Seal>,
    health: Mutex<Health>,
}

impl Member {
    fn record(&self, outcome: Result<(), &SealError>) {
        let mut health = self.health.lock().unwrap_or_else(PoisonError::into_inner);
        match outcome {
            Ok(()) => {
                if health.healthy == Some(false) {
                    tracing::info!(seal = %self.name, "seal backend is healthy again");
                }
                *health = Health {
                    healthy: Some(true),
                    ..Health::default()
                };
            }
            // A blob that does not open is not the backend's fault.
            Err(SealError::Decrypt | SealError::Malformed(_) | SealError::WrongSealType { .. }) => {
            }
            Err(e) => {
                if health.healthy != Some(false) {
                    tracing::warn!(seal = %self.name, error = %e, "seal backend is unhealthy");
                    health.unhealthy_since = Some(OffsetDateTime::now_utc());
                }
                health.healthy = Some(false);
                health.last_error = Some(e.to_string());
            }
        }
    }

    fn is_healthy(&self) -> bool {
        self.health
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .healthy
            != Some(false)
    }
}

/// Several auto seals acting as one (see the module docs). With a single
/// member it behaves exactly like that seal.
pub(crate) struct SealSet {
    members: Vec<Member>,
    /// Whether these are the disabled seals of a migration.
    disabled: bool,
    /// Whether every member holds a checked wrap of every stored secret
    /// (Vault's `fully_wrapped`); set by [`SealSet::refresh`].
    fully_wrapped: AtomicBool,
}

impl fmt::Debug for SealSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealSet")
            .field(
                "members",
                &self.members.iter().map(|m| &m.name).collect::<Vec<_>>(),
            )
            .field("disabled", &self.disabled)
            .finish_non_exhaustive()
    }
}

/// The outcome of [`SealSet::refresh`] on one stored secret.
#[derive(Debug)]
pub(crate) struct Refreshed {
    /// The bytes to store instead, when anything changed.
    pub(crate) replacement: Option<Vec<u8>>,
    /// Whether every member now holds a checked wrap.
    pub(crate) complete: bool,
    /// Whether a wrap of a seal no longer configured was dropped.
    pub(crate) dropped: bool,
}

impl SealSet {
    /// A set of `seals`, tried by priority.
    ///
    /// # Errors
    /// A message when the set is empty, or names or priorities repeat.
    pub(crate) fn new(mut seals: Vec<NamedSeal>, disabled: bool) -> Result<Self, String> {
        if seals.is_empty() {
            return Err("a seal set needs at least one seal".into());
        }
        seals.sort_by_key(|s| s.priority);
        for pair in seals.windows(2) {
            if let [a, b] = pair
                && a.priority == b.priority
            {
                return Err(format!(
                    "seals {:?} and {:?} have the same priority {}; give each seal its own \
                     priority",
                    a.name, b.name, a.priority
                ));
            }
        }
        for (i, s) in seals.iter().enumerate() {
            if s.name == RECOVERY_SLOT || seals[..i].iter().any(|o| o.name == s.name) {
                return Err(format!(
                    "seal name {:?} is used twice or reserved; give each seal its own name",
                    s.name
                ));
            }
            if s.seal.seal_type() == SealType::Shamir {
                return Err("a Shamir seal cannot be part of an auto seal set".into());
            }
        }
        Ok(Self {
            members: seals
                .into_iter()
                .map(|s| Member {
                    name: s.name,
                    priority: s.priority,
                    seal: s.seal,
                    health: Mutex::new(Health::default()),
                })
                .collect(),
            disabled,
            fully_wrapped: AtomicBool::new(false),
        })
    }

    /// The names of the members, by priority.
    pub(crate) fn names(&self) -> Vec<String> {
        self.members.iter().map(|m| m.name.clone()).collect()
    }

    /// Whether every member holds a checked wrap (see [`SealSet::refresh`]).
    pub(crate) fn fully_wrapped(&self) -> bool {
        self.fully_wrapped.load(Ordering::SeqCst)
    }

    pub(crate) fn set_fully_wrapped(&self, value: bool) {
        self.fully_wrapped.store(value, Ordering::SeqCst);
    }

    /// Whether every member answered its last call.
    pub(crate) fn all_healthy(&self) -> bool {
        self.members.iter().all(Member::is_healthy)
    }

    /// Each member's health, for `sys/seal-backend-status` and metrics.
    pub(crate) fn backend_status(&self) -> Vec<SealBackendStatus> {
        self.members
            .iter()
            .map(|m| {
                let h = m.health.lock().unwrap_or_else(PoisonError::into_inner);
                let healthy = h.healthy != Some(false);
                SealBackendStatus {
                    name: m.name.clone(),
                    seal_type: m.seal.seal_type().as_str().to_owned(),
                    priority: m.priority,
                    healthy,
                    configured: true,
                    disabled: self.disabled,
                    unhealthy_since: h.unhealthy_since.filter(|_| !healthy).and_then(|t| {
                        t.format(&time::format_description::well_known::Rfc3339)
                            .ok()
                    }),
                    last_error: h.last_error.clone().filter(|_| !healthy),
                }
            })
            .collect()
    }

    /// Runs every member's health check (encrypt and decrypt a probe) and
    /// records the outcome. Returns whether all answered.
    pub(crate) async fn check_health(&self) -> bool {
        let mut all = true;
        for m in &self.members {
            let outcome = m.seal.health_check().await;
            m.record(outcome.as_ref().map(|_| ()));
            all &= outcome.is_ok();
        }
        all
    }

    /// Wraps `plaintext` with every member that answers. Returns the
    /// document (or the lone seal's blob) and whether every member wrapped.
    ///
    /// # Errors
    /// The highest-priority member's error when none succeeded.
    pub(crate) async fn wrap_all(
        &self,
        plaintext: &[u8],
        aad: &[u8],
    ) -> Result<(MultiWrap, bool), SealError> {
        let mut doc = MultiWrap {
            multi_wrap: 1,
            slots: Vec::new(),
        };
        let mut first_err = None;
        for m in &self.members {
            match m.seal.encrypt(plaintext, aad).await {
                Ok(blob) => {
                    m.record(Ok(()));
                    doc.put(Slot::new(&m.name, m.seal.seal_type().as_str(), &blob));
                }
                Err(e) => {
                    m.record(Err(&e));
                    tracing::warn!(seal = %m.name, error = %e, "seal could not wrap a key; it is left out until it answers again");
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) if doc.slots.is_empty() => Err(e),
            other => Ok((doc, other.is_none())),
        }
    }

    /// Stored bytes for `doc`: the lone seal's raw blob when the document
    /// holds exactly one slot of this set's only member, else the JSON
    /// document.
    pub(crate) fn store_form(&self, doc: &MultiWrap) -> Result<Vec<u8>, SealError> {
        if let ([only], [member]) = (doc.slots.as_slice(), self.members.as_slice())
            && only.name == member.name
        {
            return only.bytes();
        }
        Ok(doc.to_bytes())
    }

    /// Reads stored bytes as a document (a lone blob becomes a one-slot
    /// document named after the highest-priority member of its type).
    pub(crate) fn as_doc(&self, raw: &[u8]) -> Result<MultiWrap, SealError> {
        if let Some(doc) = MultiWrap::parse(raw)? {
            return Ok(doc);
        }
        let name = self
            .members
            .iter()
            .find(|m| seal_core::blob::decode(m.seal.seal_type(), raw).is_ok())
            .or_else(|| self.members.first())
            .map_or_else(String::new, |m| m.name.clone());
        let seal_type = self
            .members
            .iter()
            .find(|m| m.name == name)
            .map_or("unknown", |m| m.seal.seal_type().as_str());
        Ok(MultiWrap {
            multi_wrap: 1,
            slots: vec![Slot::new(&name, seal_type, raw)],
        })
    }

    /// Opens stored bytes with the first member that can, by priority:
    /// first each member's own slot, then (seals renamed in the config) any
    /// slot of the member's type. The break-glass slot is not opened here.
    ///
    /// # Errors
    /// The highest-priority member's error when none could open it.
    pub(crate) async fn unwrap_any(
        &self,
        raw: &[u8],
        aad: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, SealError> {
        let doc = self.as_doc(raw)?;
        let mut first_err: Option<SealError> = None;
        let mut tried = Vec::new();
        for pass in 0..2 {
            for m in &self.members {
                let ty = m.seal.seal_type().as_str();
                for (i, slot) in doc.slots.iter().enumerate() {
                    let fits = if pass == 0 {
                        slot.name == m.name
                    } else {
                        slot.seal_type == ty && !tried.contains(&(m.name.clone(), i))
                    };
                    if !fits {
                        continue;
                    }
                    tried.push((m.name.clone(), i));
                    let blob = slot.bytes()?;
                    match m.seal.decrypt(&blob, aad).await {
                        Ok(plain) => {
                            m.record(Ok(()));
                            return Ok(plain);
                        }
                        Err(e) => {
                            m.record(Err(&e));
                            tracing::debug!(seal = %m.name, error = %e, "seal could not open a stored key");
                            first_err.get_or_insert(e);
                        }
                    }
                }
            }
        }
        Err(first_err.unwrap_or(SealError::Malformed(
            "no slot of the stored keys belongs to a configured seal",
        )))
    }

    /// Whether some member opens the stored bytes *and* they are under that
    /// member's current key. A KMS decrypts any blob of its account
    /// whatever key is configured (Vault issue 20337), so opening alone
    /// does not prove the wrap belongs to this seal.
    pub(crate) async fn owns(&self, raw: &[u8], aad: &[u8]) -> bool {
        let Ok(doc) = self.as_doc(raw) else {
            return false;
        };
        for m in &self.members {
            let ty = m.seal.seal_type().as_str();
            for slot in doc.slots.iter().filter(|s| s.seal_type == ty) {
                let Ok(blob) = slot.bytes() else { continue };
                if m.seal.decrypt(&blob, aad).await.is_ok()
                    && matches!(m.seal.rewrap(&blob, aad).await, Ok(None))
                {
                    return true;
                }
            }
        }
        false
    }

    /// Brings a stored secret up to date with the configured set: adds the
    /// wrap of a member that has none (it was down at the last write, or
    /// was just added to the config), re-wraps a member's slot under its
    /// current key (`kms_key_id` changed), drops slots of seals no longer
    /// configured (and the break-glass slot, which the core re-adds),
    /// and converts between the one-seal and the document forms.
    /// A member that does not answer keeps its old slot and makes the
    /// result incomplete.
    ///
    /// # Errors
    /// [`SealError`] when `plaintext` cannot be wrapped by any member and
    /// the stored bytes are not a valid document.
    pub(crate) async fn refresh(
        &self,
        raw: &[u8],
        plaintext: &[u8],
        aad: &[u8],
    ) -> Result<Refreshed, SealError> {
        let old = self.as_doc(raw)?;
        let mut doc = MultiWrap {
            multi_wrap: 1,
            slots: Vec::new(),
        };
        let mut complete = true;
        for m in &self.members {
            let existing = old.slot(&m.name).cloned();
            let outcome = self
                .refresh_slot(m, existing.as_ref(), plaintext, aad)
                .await;
            match outcome {
                Ok(slot) => {
                    m.record(Ok(()));
                    doc.put(slot);
                }
                Err(e) => {
                    m.record(Err(&e));
                    complete = false;
                    if let Some(slot) = existing {
                        doc.put(slot);
                    }
                }
            }
        }
        let dropped = old.slots.iter().any(|slot| {
            slot.name != RECOVERY_SLOT && !self.members.iter().any(|m| m.name == slot.name)
        });
        let new_raw = self.store_form(&doc)?;
        Ok(Refreshed {
            replacement: (new_raw != raw).then_some(new_raw),
            complete,
            dropped,
        })
    }
}

impl SealSet {
    /// One member's slot, checked: it must open to `plaintext` (else it is
    /// replaced by a fresh wrap) and be under the member's current key
    /// (else re-wrapped).
    async fn refresh_slot(
        &self,
        m: &Member,
        existing: Option<&Slot>,
        plaintext: &[u8],
        aad: &[u8],
    ) -> Result<Slot, SealError> {
        let ty = m.seal.seal_type().as_str();
        if let Some(slot) = existing {
            let blob = slot.bytes()?;
            match m.seal.decrypt(&blob, aad).await {
                Ok(plain) if bool::from(subtle::ConstantTimeEq::ct_eq(&plain[..], plaintext)) => {
                    return Ok(match m.seal.rewrap(&blob, aad).await? {
                        Some(new) => Slot::new(&m.name, ty, &new),
                        None => slot.clone(),
                    });
                }
                Ok(_) | Err(SealError::Decrypt | SealError::Malformed(_)) => {}
                Err(e) => return Err(e),
            }
        }
        let blob = m.seal.encrypt(plaintext, aad).await?;
        Ok(Slot::new(&m.name, ty, &blob))
    }
}

#[async_trait]
impl Seal for SealSet {
    fn seal_type(&self) -> SealType {
        self.members
            .first()
            .map_or(SealType::AwsKms, |m| m.seal.seal_type())
    }

    async fn encrypt(&self, plaintext: &[u8], aad: &[u8]) -> Result<Vec<u8>, SealError> {
        let (doc, complete) = self.wrap_all(plaintext, aad).await?;
        if !complete {
            self.set_fully_wrapped(false);
        }
        self.store_form(&doc)
    }

    async fn decrypt(&self, blob: &[u8], aad: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
        self.unwrap_any(blob, aad).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use seal_core::testing::InsecureTestSeal;

    fn named(name: &str, priority: u32, seal: &Arc<InsecureTestSeal>) -> NamedSeal {
        NamedSeal {
            name: name.into(),
            priority,
            seal: seal.clone(),
        }
    }

    #[tokio::test]
    async fn one_seal_stores_its_own_blob_and_several_a_document() {
        let a = Arc::new(InsecureTestSeal::new());
        let b = Arc::new(InsecureTestSeal::new());
        let one = SealSet::new(vec![named("a", 1, &a)], false).unwrap();
        let raw = one.encrypt(b"secret", b"aad").await.unwrap();
        assert_eq!(a.decrypt(&raw, b"aad").await.unwrap().as_slice(), b"secret");

        let two = SealSet::new(vec![named("b", 2, &b), named("a", 1, &a)], false).unwrap();
        assert_eq!(two.names(), ["a", "b"]);
        let raw = two.encrypt(b"secret", b"aad").await.unwrap();
        let doc = MultiWrap::parse(&raw).unwrap().unwrap();
        assert_eq!(doc.slots.len(), 2);
        // Either seal alone opens it.
        a.set_unreachable(true);
        assert_eq!(
            two.decrypt(&raw, b"aad").await.unwrap().as_slice(),
            b"secret"
        );
        let status = two.backend_status();
        assert!(!status[0].healthy && status[0].unhealthy_since.is_some());
        assert!(status[1].healthy);
        b.set_unreachable(true);
        assert!(two.decrypt(&raw, b"aad").await.is_err());
    }

    #[tokio::test]
    async fn a_seal_down_at_write_is_added_back_by_refresh() {
        let a = Arc::new(InsecureTestSeal::new());
        let b = Arc::new(InsecureTestSeal::new());
        let set = SealSet::new(vec![named("a", 1, &a), named("b", 2, &b)], false).unwrap();
        b.set_unreachable(true);
        let raw = set.encrypt(b"secret", b"aad").await.unwrap();
        assert_eq!(MultiWrap::parse(&raw).unwrap().unwrap().slots.len(), 1);
        let still = set.refresh(&raw, b"secret", b"aad").await.unwrap();
        assert!(!still.complete && still.replacement.is_none());
        b.set_unreachable(false);
        let done = set.refresh(&raw, b"secret", b"aad").await.unwrap();
        assert!(done.complete);
        let raw = done.replacement.unwrap();
        a.set_unreachable(true);
        assert_eq!(
            set.decrypt(&raw, b"aad").await.unwrap().as_slice(),
            b"secret"
        );
    }

    #[tokio::test]
    async fn refresh_converts_between_one_seal_and_several() {
        let a = Arc::new(InsecureTestSeal::new());
        let b = Arc::new(InsecureTestSeal::new());
        let single = SealSet::new(vec![named("a", 1, &a)], false).unwrap();
        let raw = single.encrypt(b"k", b"p").await.unwrap();
        let both = SealSet::new(vec![named("a", 1, &a), named("b", 2, &b)], false).unwrap();
        let grown = both.refresh(&raw, b"k", b"p").await.unwrap();
        let grown = grown.replacement.unwrap();
        assert_eq!(MultiWrap::parse(&grown).unwrap().unwrap().slots.len(), 2);
        let only_b = SealSet::new(vec![named("b", 1, &b)], false).unwrap();
        let shrunk = only_b.refresh(&grown, b"k", b"p").await.unwrap();
        let shrunk = shrunk.replacement.unwrap();
        assert!(MultiWrap::parse(&shrunk).unwrap().is_none());
        assert_eq!(b.decrypt(&shrunk, b"p").await.unwrap().as_slice(), b"k");
    }

    #[test]
    fn bad_sets_are_refused() {
        let a = Arc::new(InsecureTestSeal::new());
        assert!(SealSet::new(vec![], false).is_err());
        assert!(SealSet::new(vec![named("a", 1, &a), named("a", 2, &a)], false).is_err());
        assert!(SealSet::new(vec![named("a", 1, &a), named("b", 1, &a)], false).is_err());
        assert!(SealSet::new(vec![named(RECOVERY_SLOT, 1, &a)], false).is_err());
    }

    proptest! {
        #[test]
        fn parse_never_panics(raw in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = MultiWrap::parse(&raw);
        }

        #[test]
        fn parse_never_panics_on_json_like_input(text in "\\{.{0,120}") {
            let _ = MultiWrap::parse(text.as_bytes());
        }
    }
}
