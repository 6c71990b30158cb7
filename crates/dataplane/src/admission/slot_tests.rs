//! The async slot: waits, sheds, leavers and deadlines, on tokio's clock.
use super::*;

#[tokio::test]
async fn waits_for_a_slot_sheds_when_full_and_passes_on_a_leavers_slot() {
    let admission = Arc::new(Admission::new("p", 1, 1, None, &AdmissionConfig::default()));
    let (first, _) = admission.slot(2, "", None).await.unwrap();
    let queued = {
        let admission = admission.clone();
        tokio::spawn(async move { admission.slot(2, "", None).await.map(|(_, w)| w) })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    let shed = admission.slot(2, "", None).await.err().unwrap();
    assert!(matches!(shed, GatewayError::Overloaded { retry_after_ms, .. } if retry_after_ms >= 1));
    drop(first);
    assert!(queued.await.unwrap().unwrap() >= Duration::from_millis(15));
    // A caller that leaves the queue is taken out; the next one gets the slot.
    let (held, _) = admission.slot(2, "", None).await.unwrap();
    let leaver = {
        let admission = admission.clone();
        tokio::spawn(async move { admission.slot(2, "", None).await.map(|_| ()) })
    };
    tokio::time::sleep(Duration::from_millis(10)).await;
    leaver.abort();
    let _ = leaver.await;
    assert_eq!(admission.cancelled.load(Ordering::Relaxed), 1);
    drop(held);
    let deadline = Some(Instant::now() + Duration::from_secs(1));
    assert!(admission.slot(2, "", deadline).await.is_ok());
    let stats = admission.stats();
    assert_eq!(
        (stats["in_flight"].as_u64(), stats["queued"].as_u64()),
        (Some(0), Some(0))
    );
}

#[tokio::test]
async fn a_quiet_tenant_pushes_the_floods_newest_out_of_a_full_queue() {
    let admission = Arc::new(Admission::new("p", 1, 2, None, &AdmissionConfig::default()));
    let (held, _) = admission.slot(2, "flood", None).await.unwrap();
    let wait = |tenant: &'static str| {
        let admission = admission.clone();
        tokio::spawn(async move { admission.slot(2, tenant, None).await.map(|_| ()) })
    };
    let (first, newest) = (wait("flood"), wait("flood"));
    tokio::time::sleep(Duration::from_millis(20)).await;
    let quiet = wait("quiet");
    let pushed_out = newest.await.unwrap().err().unwrap();
    assert!(
        matches!(&pushed_out, GatewayError::Overloaded { message, .. } if message.contains("tenant over its share")),
        "{pushed_out:?}"
    );
    drop(held);
    first.await.unwrap().unwrap();
    quiet.await.unwrap().unwrap();
    let stats = admission.stats();
    assert_eq!(stats["shed_by_reason"]["tenant over its share"], 1);
    let flood = &stats["tenants"].as_array().unwrap()[0];
    assert_eq!(
        (flood["tenant"].as_str(), flood["shed"].as_u64()),
        (Some("flood"), Some(1))
    );
}

#[tokio::test]
async fn a_queued_request_leaves_when_it_can_no_longer_be_served_in_time() {
    let admission = Arc::new(Admission::new(
        "p",
        1,
        10,
        None,
        &AdmissionConfig::default(),
    ));
    // Requests take 100 ms: one waiting behind the one served expects 200 ms, so with 300 ms
    // to its deadline it is queued, and it leaves once 100 ms (and a margin) are all that is
    // left, well before its deadline (a wide margin: tests share the machine's cores).
    locked(&admission.inner).policy.service_time_s = 0.1;
    let held = admission.slot(2, "", None).await.unwrap();
    let started = Instant::now();
    let error = admission
        .slot(2, "", Some(started + Duration::from_millis(300)))
        .await
        .err()
        .unwrap();
    assert!(
        matches!(error, GatewayError::DeadlineExceeded(ref m) if m.contains("ms in the queue")),
        "{error:?}"
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(150) && waited < Duration::from_millis(280),
        "{waited:?}"
    );
    drop(held);
}
