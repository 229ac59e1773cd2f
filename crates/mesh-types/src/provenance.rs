//! Provenance events and the hash chain that makes the log tamper-evident.
//!
//! Each event commits to the previous one: `hash = SHA-256(canonical JSON of every
//! field but the hash)`, and the sealed fields include `prevHash`. Verification is a
//! pure fold over the events in sequence order plus the separately stored head (count
//! and last hash), so it can run anywhere the events can be read.

use crate::canonical;
use crate::time::{Timestamp, rfc3339_micros};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::fmt::Write;
use uuid::Uuid;

/// `prevHash` of the first event.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// An event before it is placed in the chain. Stores seal drafts inside the
/// transaction of the state change they describe.
#[derive(Debug, Clone, PartialEq)]
pub struct EventDraft {
    /// What happened, e.g. `task_created`, `agent_retired`, `auth_denied`.
    pub action: String,
    /// Who did it: a principal or agent name, or `system`.
    pub actor: String,
    /// The task whose timeline this event belongs to, if any.
    pub task_id: Option<Uuid>,
    /// Kind of the thing changed: `task`, `agent`, `tool`, `api_key`, `request`.
    pub subject_type: String,
    pub subject_id: Option<String>,
    pub payload: Value,
}

impl EventDraft {
    pub fn new(action: &str, actor: &str, subject_type: &str, subject_id: Option<String>) -> Self {
        Self {
            action: action.to_string(),
            actor: actor.to_string(),
            task_id: None,
            subject_type: subject_type.to_string(),
            subject_id,
            payload: json!({}),
        }
    }

    pub fn task(mut self, task_id: Uuid) -> Self {
        self.task_id = Some(task_id);
        self
    }

    pub fn payload(mut self, payload: Value) -> Self {
        self.payload = payload;
        self
    }
}

/// A sealed event as stored in the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProvenanceEvent {
    pub seq: i64,
    pub id: Uuid,
    #[serde(with = "rfc3339_micros")]
    pub timestamp: Timestamp,
    pub action: String,
    pub actor: String,
    pub task_id: Option<Uuid>,
    pub subject_type: String,
    pub subject_id: Option<String>,
    pub payload: Value,
    pub prev_hash: String,
    pub hash: String,
}

/// A draft with its id chosen and the part of its hash that does not depend on its
/// place in the log already computed. The canonical JSON the hash covers has its
/// members in sorted order, and every member before `prevHash` (action, actor, id,
/// payload) is known before the log's head is: preparing digests them, so the store
/// does only the short tail of the work while it holds the head.
#[derive(Debug, Clone)]
pub struct PreparedDraft {
    draft: EventDraft,
    id: Uuid,
    digest: Sha256,
    /// The payload as canonical JSON, written for the digest and kept for the store,
    /// which would otherwise serialise the payload again.
    payload_json: String,
    /// Whether the payload's value was dropped (see [`Self::detach`]).
    detached: bool,
}

impl From<EventDraft> for PreparedDraft {
    fn from(draft: EventDraft) -> Self {
        let id = Uuid::now_v7();
        let (digest, payload_json) = digest_head(&draft.action, &draft.actor, id, &draft.payload);
        Self {
            draft,
            id,
            digest,
            payload_json,
            detached: false,
        }
    }
}

impl PreparedDraft {
    /// Drops the payload's value now, on the caller's thread, keeping its canonical
    /// JSON (all a store writes). A store's writer is its one serial resource, and
    /// freeing payload trees was 9% of its time under `mesh bench queue`.
    /// `ProvenanceEvent::seal_prepared` parses a detached payload back, so its event
    /// is the same; `ProvenanceEvent::seal_for_store` leaves it `null`.
    pub fn detach(mut self) -> Self {
        // Replaced, so the old value is dropped here rather than where it is sealed.
        drop(std::mem::take(&mut self.draft.payload));
        self.detached = true;
        self
    }
}

/// The digest over `{"action":…,"actor":…,"id":…,"payload":…,"prevHash":` — the
/// members that precede the event's place in the log — and the payload's canonical
/// JSON.
fn digest_head(action: &str, actor: &str, id: Uuid, payload: &Value) -> (Sha256, String) {
    let mut digest = Sha256::new_with_prefix(head_text(action, actor, id).as_bytes());
    let payload_json = canonical::to_string(payload);
    digest.update(payload_json.as_bytes());
    digest.update(b",\"prevHash\":");
    (digest, payload_json)
}

/// `{"action":…,"actor":…,"id":…,"payload":` — the canonical JSON before the payload.
fn head_text(action: &str, actor: &str, id: Uuid) -> String {
    let mut out = String::with_capacity(128);
    out.push_str("{\"action\":");
    canonical::write_string(&mut out, action);
    out.push_str(",\"actor\":");
    canonical::write_string(&mut out, actor);
    out.push_str(",\"id\":");
    canonical::write_string(&mut out, &id.hyphenated().to_string());
    out.push_str(",\"payload\":");
    out
}

impl ProvenanceEvent {
    /// Places a draft at position `seq` after the event whose hash is `prev_hash`.
    pub fn seal(draft: EventDraft, seq: i64, prev_hash: &str, timestamp: Timestamp) -> Self {
        Self::seal_prepared(draft.into(), seq, prev_hash, timestamp).0
    }

    /// [`Self::seal`] for a draft prepared beforehand; also returns the payload as
    /// canonical JSON, which is what a store writes (it parses back to the same value).
    pub fn seal_prepared(
        prepared: PreparedDraft,
        seq: i64,
        prev_hash: &str,
        timestamp: Timestamp,
    ) -> (Self, String) {
        let detached = prepared.detached;
        let (mut event, payload_json) = Self::seal_for_store(prepared, seq, prev_hash, timestamp);
        if detached {
            // Canonical JSON parses back to the value it was written from.
            event.payload = serde_json::from_str(&payload_json).unwrap_or(Value::Null);
        }
        (event, payload_json)
    }

    /// [`Self::seal_prepared`] for a store that writes the payload's JSON and discards
    /// the event: a detached draft's payload stays `null` in the returned event rather
    /// than being parsed back.
    pub fn seal_for_store(
        prepared: PreparedDraft,
        seq: i64,
        prev_hash: &str,
        timestamp: Timestamp,
    ) -> (Self, String) {
        let PreparedDraft {
            draft,
            id,
            digest,
            payload_json,
            detached: _,
        } = prepared;
        let mut event = ProvenanceEvent {
            seq,
            id,
            timestamp,
            action: draft.action,
            actor: draft.actor,
            task_id: draft.task_id,
            subject_type: draft.subject_type,
            subject_id: draft.subject_id,
            payload: draft.payload,
            prev_hash: prev_hash.to_string(),
            hash: String::new(),
        };
        event.hash = event.finish_hash(digest);
        (event, payload_json)
    }

    /// The hash this event's content commits to, whatever its stored `hash` says.
    ///
    /// The digest is over the canonical JSON of `{seq, id, timestamp, action, actor,
    /// taskId, subjectType, subjectId, payload, prevHash}`. It is written member by
    /// member, in canonical (sorted) order, rather than by building that object: this
    /// runs for every event, and copying the payload into a new object was a tenth of
    /// the store writer's time.
    pub fn compute_hash(&self) -> String {
        let (digest, _) = digest_head(&self.action, &self.actor, self.id, &self.payload);
        self.finish_hash(digest)
    }

    /// Completes a digest of the members up to `prevHash` with the rest.
    fn finish_hash(&self, mut digest: Sha256) -> String {
        let mut out = String::with_capacity(256);
        canonical::write_string(&mut out, &self.prev_hash);
        let _ = write!(out, ",\"seq\":{}", self.seq);
        write_tail(
            &mut out,
            self.subject_id.as_deref(),
            &self.subject_type,
            self.task_id,
            &self.timestamp,
        );
        digest.update(out.as_bytes());
        hex::encode(digest.finalize())
    }
}

/// The canonical JSON the hash covers after `seq`'s value: `,"subjectId":…}`.
fn write_tail(
    out: &mut String,
    subject_id: Option<&str>,
    subject_type: &str,
    task_id: Option<Uuid>,
    timestamp: &Timestamp,
) {
    let opt = |out: &mut String, v: Option<&str>| match v {
        Some(v) => canonical::write_string(out, v),
        None => out.push_str("null"),
    };
    out.push_str(",\"subjectId\":");
    opt(out, subject_id);
    out.push_str(",\"subjectType\":");
    canonical::write_string(out, subject_type);
    out.push_str(",\"taskId\":");
    let task = task_id.map(|t| t.hyphenated().to_string());
    opt(out, task.as_deref());
    out.push_str(",\"timestamp\":");
    canonical::write_string(out, &crate::time::format(timestamp));
    out.push('}');
}

/// A draft split for a store that chains events on its database server: the canonical
/// JSON the hash covers is `head`, then the payload's JSON, then
/// `,"prevHash":"<previous hash>","seq":<seq>`, then `tail`. The server fills in the
/// middle once it holds the log's head; everything else is written here.
#[derive(Debug, Clone)]
pub struct ServerSealed {
    pub draft: EventDraft,
    pub id: Uuid,
    pub timestamp: Timestamp,
    pub head: String,
    pub payload_json: String,
    pub tail: String,
}

impl ServerSealed {
    pub fn new(draft: EventDraft, timestamp: Timestamp) -> Self {
        let id = Uuid::now_v7();
        let head = head_text(&draft.action, &draft.actor, id);
        let payload_json = canonical::to_string(&draft.payload);
        let mut tail = String::with_capacity(160);
        write_tail(
            &mut tail,
            draft.subject_id.as_deref(),
            &draft.subject_type,
            draft.task_id,
            &timestamp,
        );
        Self {
            draft,
            id,
            timestamp,
            head,
            payload_json,
            tail,
        }
    }

    /// The event, once the server has placed it at `seq` after `prev_hash` with `hash`.
    pub fn into_event(self, seq: i64, prev_hash: String, hash: String) -> ProvenanceEvent {
        ProvenanceEvent {
            seq,
            id: self.id,
            timestamp: self.timestamp,
            action: self.draft.action,
            actor: self.draft.actor,
            task_id: self.draft.task_id,
            subject_type: self.draft.subject_type,
            subject_id: self.draft.subject_id,
            payload: self.draft.payload,
            prev_hash,
            hash,
        }
    }
}

/// The log's head, stored apart from the events so that removing the newest events
/// is detectable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChainHead {
    pub count: i64,
    pub last_hash: String,
}

impl ChainHead {
    pub fn genesis() -> Self {
        Self {
            count: 0,
            last_hash: GENESIS_HASH.to_string(),
        }
    }
}

/// How the chain is broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreachKind {
    /// The event's content no longer matches its hash.
    Altered,
    /// Sequence numbers skip: the events in between were deleted.
    Deleted,
    /// The event does not follow the one before it: an event was inserted, removed
    /// and renumbered around, or the order was changed.
    Relinked,
    /// The newest events recorded in the head are gone.
    Truncated,
    /// Events exist beyond what the head records, or the last hash differs from it.
    HeadMismatch,
    /// The events up to a stored checkpoint no longer hash to its Merkle root: the
    /// log was rewritten (chain and head recomputed) after the checkpoint was signed.
    CheckpointMismatch,
    /// Events no longer hash to the stored root of a Merkle subtree over them (kept
    /// for proofs): the log was rewritten after the root was stored, or the root was
    /// altered. Proofs over those events fail until it is right.
    SubtreeMismatch,
}

/// The first place the chain fails to verify.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Breach {
    pub kind: BreachKind,
    /// The first event that fails, when there is one to name.
    pub event_id: Option<Uuid>,
    pub seq: Option<i64>,
    pub message: String,
}

/// Folds events, in ascending `seq` order, into a verdict on the chain.
#[derive(Debug)]
pub struct ChainVerifier {
    expected_seq: i64,
    prev_hash: String,
    last_event: Option<Uuid>,
    breach: Option<Breach>,
}

impl Default for ChainVerifier {
    fn default() -> Self {
        Self::new()
    }
}

impl ChainVerifier {
    pub fn new() -> Self {
        Self {
            expected_seq: 1,
            prev_hash: GENESIS_HASH.to_string(),
            last_event: None,
            breach: None,
        }
    }

    /// Number of events checked so far.
    pub fn checked(&self) -> i64 {
        self.expected_seq - 1
    }

    /// Whether a breach was found (later events need not be read).
    pub fn is_broken(&self) -> bool {
        self.breach.is_some()
    }

    pub fn push(&mut self, event: &ProvenanceEvent) {
        if self.breach.is_some() {
            return;
        }
        let breach = |kind, message: String| Breach {
            kind,
            event_id: Some(event.id),
            seq: Some(event.seq),
            message,
        };
        if event.seq > self.expected_seq {
            self.breach = Some(breach(
                BreachKind::Deleted,
                format!(
                    "events {}..{} are missing before event {} (seq {})",
                    self.expected_seq,
                    event.seq - 1,
                    event.id,
                    event.seq
                ),
            ));
            return;
        }
        if event.compute_hash() != event.hash {
            self.breach = Some(breach(
                BreachKind::Altered,
                format!(
                    "event {} (seq {}) was altered: its content does not match its hash",
                    event.id, event.seq
                ),
            ));
            return;
        }
        if event.seq < self.expected_seq || event.prev_hash != self.prev_hash {
            self.breach = Some(breach(
                BreachKind::Relinked,
                format!(
                    "event {} (seq {}) does not follow the event before it: events were inserted, removed or reordered",
                    event.id, event.seq
                ),
            ));
            return;
        }
        self.expected_seq += 1;
        self.prev_hash = event.hash.clone();
        self.last_event = Some(event.id);
    }

    /// The verdict, comparing what was read with the stored head.
    pub fn finish(self, head: &ChainHead) -> Result<i64, Breach> {
        if let Some(breach) = self.breach {
            return Err(breach);
        }
        let count = self.checked();
        if count < head.count {
            return Err(Breach {
                kind: BreachKind::Truncated,
                event_id: None,
                seq: Some(count + 1),
                message: format!(
                    "the log ends at seq {count} but its head records {} events: the newest {} were removed (last intact event {})",
                    head.count,
                    head.count - count,
                    self.last_event
                        .map(|id| id.to_string())
                        .unwrap_or_else(|| "none".into())
                ),
            });
        }
        if count > head.count || self.prev_hash != head.last_hash {
            return Err(Breach {
                kind: BreachKind::HeadMismatch,
                event_id: self.last_event,
                seq: Some(count),
                message: format!(
                    "the log has {count} events ending in {} but its head records {} events ending in {}",
                    self.prev_hash, head.count, head.last_hash
                ),
            });
        }
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The parts a database server completes hash to what the event's own hash is.
    #[test]
    fn server_sealed_parts_hash_like_the_event() {
        let draft = EventDraft::new("tool_call", "agent \"ü\"\n", "tool", Some("t/1".into()))
            .task(Uuid::now_v7())
            .payload(json!({"z": [1, 2.5, null], "a": "é\u{1F600}\\", "m": {"k": true}}));
        let parts = ServerSealed::new(draft, crate::time::now());
        let prev = "ab".repeat(32);
        let mut preimage = parts.head.clone();
        preimage.push_str(&parts.payload_json);
        preimage.push_str(&format!(",\"prevHash\":\"{prev}\",\"seq\":42"));
        preimage.push_str(&parts.tail);
        let hash = hex::encode(Sha256::digest(preimage.as_bytes()));
        let event = parts.into_event(42, prev, hash.clone());
        assert_eq!(event.compute_hash(), hash);
    }

    fn chain(n: i64) -> Vec<ProvenanceEvent> {
        let mut prev = GENESIS_HASH.to_string();
        (1..=n)
            .map(|seq| {
                let draft = EventDraft::new("task_created", "tester", "task", None)
                    .payload(json!({"n": seq, "ratio": 0.25}));
                let e = ProvenanceEvent::seal(draft, seq, &prev, crate::time::now());
                prev = e.hash.clone();
                e
            })
            .collect()
    }

    /// The hash as first defined: over the canonical encoding of a built object.
    fn hash_of_object(e: &ProvenanceEvent) -> String {
        let sealed = json!({
            "seq": e.seq,
            "id": e.id,
            "timestamp": crate::time::format(&e.timestamp),
            "action": e.action,
            "actor": e.actor,
            "taskId": e.task_id,
            "subjectType": e.subject_type,
            "subjectId": e.subject_id,
            "payload": e.payload,
            "prevHash": e.prev_hash,
        });
        hex::encode(Sha256::digest(canonical::to_string(&sealed).as_bytes()))
    }

    #[test]
    fn the_hash_written_member_by_member_is_the_hash_of_the_object() {
        let drafts = [
            EventDraft::new("task_created", "tester", "task", None),
            EventDraft::new("a\"ction\n", "ünï€ode 😀", "ta\\sk", Some("s\u{1}".into()))
                .task(Uuid::now_v7())
                .payload(json!({"b": [1, 2.5, null], "a": {"😀": 1, "\u{ff61}": 2}, "t": "x\ty"})),
            EventDraft::new("policy_decision", "gate", "policy", Some("id".into()))
                .payload(json!({"n": -7, "big": 1e300, "u": u64::MAX})),
        ];
        for (i, draft) in drafts.into_iter().enumerate() {
            let e = ProvenanceEvent::seal(draft, i as i64 + 1, GENESIS_HASH, crate::time::now());
            assert_eq!(e.hash, hash_of_object(&e), "event {i}");
            assert_eq!(e.compute_hash(), e.hash, "event {i}");
        }
    }

    /// A detached draft seals to the same event: same hash and stored JSON, and
    /// `seal_prepared` gives the payload back; `seal_for_store` leaves it null.
    #[test]
    fn a_detached_draft_seals_to_the_same_event() {
        let draft = EventDraft::new("policy_decision", "gate", "policy", Some("d".into()))
            .task(Uuid::now_v7())
            .payload(json!({"input": {"b": [1, 2.5, null], "a": "x"}, "n": -7}));
        let now = crate::time::now();
        let kept = PreparedDraft::from(draft);
        let detached = kept.clone().detach();
        let (whole, whole_json) = ProvenanceEvent::seal_prepared(kept, 3, GENESIS_HASH, now);
        let (back, back_json) =
            ProvenanceEvent::seal_prepared(detached.clone(), 3, GENESIS_HASH, now);
        assert_eq!(back, whole);
        assert_eq!(back_json, whole_json);
        let (stored, stored_json) = ProvenanceEvent::seal_for_store(detached, 3, GENESIS_HASH, now);
        assert_eq!(stored.hash, whole.hash);
        assert_eq!(stored_json, whole_json);
        assert!(stored.payload.is_null());
    }

    fn verify(events: &[ProvenanceEvent], head: &ChainHead) -> Result<i64, Breach> {
        let mut v = ChainVerifier::new();
        events.iter().for_each(|e| v.push(e));
        v.finish(head)
    }

    fn head_of(events: &[ProvenanceEvent]) -> ChainHead {
        ChainHead {
            count: events.len() as i64,
            last_hash: events
                .last()
                .map(|e| e.hash.clone())
                .unwrap_or(GENESIS_HASH.into()),
        }
    }

    #[test]
    fn intact_chain_verifies() {
        let events = chain(10);
        assert_eq!(verify(&events, &head_of(&events)), Ok(10));
        assert_eq!(verify(&[], &ChainHead::genesis()), Ok(0));
    }

    #[test]
    fn each_kind_of_tampering_is_named() {
        let events = chain(10);
        let head = head_of(&events);

        let mut altered = events.clone();
        altered[4].payload = json!({"n": 99});
        let b = verify(&altered, &head).unwrap_err();
        assert_eq!(
            (b.kind, b.event_id),
            (BreachKind::Altered, Some(events[4].id))
        );

        let mut deleted = events.clone();
        deleted.remove(3);
        let b = verify(&deleted, &head).unwrap_err();
        assert_eq!(
            (b.kind, b.event_id),
            (BreachKind::Deleted, Some(events[4].id))
        );

        let truncated = &events[..7];
        let b = verify(truncated, &head).unwrap_err();
        assert_eq!(b.kind, BreachKind::Truncated);

        let mut extended = events.clone();
        extended.extend(chain(11).pop());
        assert!(verify(&extended, &head).is_err());

        // A forged event that is internally consistent but not linked to its predecessor.
        let mut relinked = events.clone();
        let forged = ProvenanceEvent::seal(
            EventDraft::new("task_created", "mallory", "task", None),
            6,
            GENESIS_HASH,
            crate::time::now(),
        );
        relinked[5] = forged.clone();
        let b = verify(&relinked, &head).unwrap_err();
        assert_eq!(
            (b.kind, b.event_id),
            (BreachKind::Relinked, Some(forged.id))
        );
    }

    #[test]
    fn hash_survives_a_json_round_trip() {
        let events = chain(3);
        let text = serde_json::to_string(&events).unwrap();
        let back: Vec<ProvenanceEvent> = serde_json::from_str(&text).unwrap();
        assert_eq!(verify(&back, &head_of(&events)), Ok(3));
    }
}
