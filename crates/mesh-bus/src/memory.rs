//! `memory://`: the bus in this process's memory. Explicitly not durable — for tests and
//! throwaway runs; a restart forgets every topic.

use crate::backend::{EventBus, numeric_offset};
use async_trait::async_trait;
use mesh_service::ApiError;
use mesh_store::{GroupRead, Outgoing, ProvenanceLog};
use mesh_types::EventDraft;
use mesh_types::bus::{BusEvent, Delivery};
use mesh_types::time::Timestamp;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct Pending {
    delivered_at: Option<Timestamp>,
    deliveries: u32,
}

#[derive(Default)]
struct Group {
    delivered: usize,
    pending: BTreeMap<usize, Pending>,
}

#[derive(Default)]
struct State {
    topics: HashMap<String, Vec<BusEvent>>,
    groups: HashMap<(String, String), Group>,
    cursors: HashMap<String, i64>,
}

pub struct MemoryBus {
    state: Mutex<State>,
    log: Arc<dyn ProvenanceLog>,
}

impl MemoryBus {
    pub fn new(log: Arc<dyn ProvenanceLog>) -> Self {
        Self {
            state: Mutex::default(),
            log,
        }
    }

    fn state(&self) -> Result<std::sync::MutexGuard<'_, State>, ApiError> {
        self.state
            .lock()
            .map_err(|_| ApiError::internal("memory bus state poisoned"))
    }
}

#[async_trait]
impl EventBus for MemoryBus {
    fn kind(&self) -> &'static str {
        "memory"
    }

    async fn publish(
        &self,
        events: Vec<Outgoing>,
        audit: Vec<EventDraft>,
        cursor: Option<(String, i64)>,
    ) -> Result<Vec<BusEvent>, ApiError> {
        let now = mesh_types::time::now();
        let published = {
            let mut state = self.state()?;
            let mut published = Vec::with_capacity(events.len());
            for e in events {
                let topic = state.topics.entry(e.topic.clone()).or_default();
                let event = BusEvent {
                    topic: e.topic,
                    offset: (topic.len() + 1).to_string(),
                    id: e.id,
                    timestamp: now,
                    payload: e.payload,
                };
                topic.push(event.clone());
                published.push(event);
            }
            if let Some((name, position)) = cursor {
                state.cursors.insert(name, position);
            }
            published
        };
        if !audit.is_empty() {
            self.log.append(audit).await?;
        }
        Ok(published)
    }

    async fn read(
        &self,
        topic: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<BusEvent>, ApiError> {
        let after = after
            .map(|a| numeric_offset("after", a))
            .transpose()?
            .unwrap_or(0) as usize;
        let state = self.state()?;
        Ok(state
            .topics
            .get(topic)
            .map(|events| {
                events
                    .iter()
                    .skip(after)
                    .take(limit as usize)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn read_group(&self, r: &GroupRead) -> Result<Vec<Delivery>, ApiError> {
        let mut state = self.state()?;
        let events = state.topics.get(&r.topic).cloned().unwrap_or_default();
        let group = state
            .groups
            .entry((r.topic.clone(), r.group.clone()))
            .or_default();
        let expired_before = r.now - mesh_types::time::millis(r.visibility_ms);
        let mut out = Vec::new();
        for (index, pending) in group.pending.iter_mut() {
            if out.len() >= r.limit as usize {
                break;
            }
            if pending.delivered_at.is_some_and(|t| t < expired_before) {
                pending.delivered_at = Some(r.now);
                pending.deliveries += 1;
                out.push((*index, pending.deliveries));
            }
        }
        while out.len() < r.limit as usize && group.delivered < events.len() {
            let index = group.delivered;
            group.pending.insert(
                index,
                Pending {
                    delivered_at: Some(r.now),
                    deliveries: 1,
                },
            );
            group.delivered += 1;
            out.push((index, 1));
        }
        out.sort_unstable();
        Ok(out
            .into_iter()
            .filter_map(|(i, deliveries)| {
                events.get(i).map(|e| Delivery {
                    event: e.clone(),
                    deliveries,
                })
            })
            .collect())
    }

    async fn ack(&self, topic: &str, group: &str, offsets: &[String]) -> Result<u64, ApiError> {
        let offsets = offsets
            .iter()
            .map(|o| numeric_offset("offsets", o))
            .collect::<Result<Vec<_>, _>>()?;
        let mut state = self.state()?;
        let Some(group) = state
            .groups
            .get_mut(&(topic.to_string(), group.to_string()))
        else {
            return Ok(0);
        };
        Ok(offsets
            .into_iter()
            .filter(|o| *o >= 1 && group.pending.remove(&((*o - 1) as usize)).is_some())
            .count() as u64)
    }

    async fn cursor(&self, name: &str) -> Result<i64, ApiError> {
        Ok(self.state()?.cursors.get(name).copied().unwrap_or(0))
    }
}
