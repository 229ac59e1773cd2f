use super::Harness;

pub async fn projection_cursors_only_move_forward(h: &Harness) {
    let p = &h.store.projections;
    assert_eq!(p.projection_cursor("graph").await.unwrap(), 0);
    p.set_projection_cursor("graph", 7).await.unwrap();
    assert_eq!(p.projection_cursor("graph").await.unwrap(), 7);
    // A slower process replaying an older batch must not undo progress.
    p.set_projection_cursor("graph", 3).await.unwrap();
    assert_eq!(p.projection_cursor("graph").await.unwrap(), 7);
    p.set_projection_cursor("graph", 9).await.unwrap();
    assert_eq!(p.projection_cursor("graph").await.unwrap(), 9);
    assert_eq!(p.projection_cursor("other").await.unwrap(), 0);
}
