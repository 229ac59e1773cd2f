//! Cursor pages, the same for every backend.

use mesh_types::Page;
use uuid::Uuid;

/// Turns `limit + 1` fetched rows into a page, using the extra row to know there is more.
pub(crate) fn page<T>(mut items: Vec<T>, limit: u32, id_of: impl Fn(&T) -> Uuid) -> Page<T> {
    let more = items.len() > limit as usize;
    items.truncate(limit as usize);
    let next_cursor = if more {
        items.last().map(|t| id_of(t).to_string())
    } else {
        None
    };
    Page { items, next_cursor }
}
