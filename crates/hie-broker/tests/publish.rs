//! The outbox key of a study's submissions, on both engines, with patients made by real ADT: the
//! patient's key once the patient is linked to the affinity domain (so their identity feed goes
//! first), the survivor's after a merge, the study's own while the patient is known by MRN alone
//! (a submission under the patient's key would hold up the feed an ADT queues later, while
//! waiting for the registry to know the patient), and the key of the study's queued submission
//! while it has one (a study's submissions leave in order).

mod common;
use common::{AFFINITY_OID, domain};
#[path = "../../hie-store/tests/support/mod.rs"]
mod support;

use hie_broker::publish::metadata::KosFacts;
use hie_broker::publish::{enqueue_publication, ordering_key};
use hie_core::profile::PatientMergePolicy;
use hie_store::{Store, now_micros};

async fn adt(store: &Store, event: &str, control_id: &str, pid3: &str, mrg1: Option<&str>) {
    common::adt(store, PatientMergePolicy::Registry, event, control_id, pid3, mrg1).await;
}

fn facts(mrn: &str) -> KosFacts {
    KosFacts { patient_id: mrn.to_owned(), ..KosFacts::default() }
}

async fn patient(store: &Store, mrn: &str) -> i64 {
    store.patient_by_identifier("uid:1.2.840.99999.1.1", mrn).await.unwrap().unwrap().patient.id
}

#[tokio::test]
async fn submissions_take_the_linked_patients_key_and_the_studys_otherwise() {
    for (engine, store) in support::each_engine().await {
        let domain = domain();
        let key = |mrn: &'static str, study: &'static str| {
            let (store, domain) = (store.clone(), domain.clone());
            async move { ordering_key(&store, &domain, &facts(mrn), study).await.unwrap() }
        };
        assert_eq!(key("NOBODY", "1.1").await, "study:1.1", "{engine:?}: an unknown patient");

        adt(&store, "A04", "M1", "MRN1^^^HOSP&1.2.840.99999.1.1&ISO^MR", None).await;
        assert_eq!(key("MRN1", "1.2").await, "study:1.2", "{engine:?}: known by MRN alone");

        adt(&store, "A08", "M2", &format!("MRN1^^^HOSP&1.2.840.99999.1.1&ISO^MR~AD1^^^&{AFFINITY_OID}&ISO^PI"), None)
            .await;
        let first = patient(&store, "MRN1").await;
        assert_eq!(key("MRN1", "1.3").await, format!("patient:{first}"), "{engine:?}: linked");

        // A merge: the survivor's key.
        adt(&store, "A04", "M3", &format!("MRN2^^^HOSP&1.2.840.99999.1.1&ISO^MR~AD2^^^&{AFFINITY_OID}&ISO^PI"), None)
            .await;
        let survivor = patient(&store, "MRN2").await;
        adt(
            &store,
            "A40",
            "M4",
            &format!("MRN2^^^HOSP&1.2.840.99999.1.1&ISO^MR~AD2^^^&{AFFINITY_OID}&ISO^PI"),
            Some("MRN1^^^HOSP&1.2.840.99999.1.1&ISO^MR"),
        )
        .await;
        assert_eq!(key("MRN1", "1.4").await, format!("patient:{survivor}"), "{engine:?}: merged");

        // A study with a queued submission keeps its key, whatever the patient's is now.
        let mut tx = store.begin().await.unwrap();
        enqueue_publication(&mut tx, "1.5", 1, "1.9.1", "study:1.5", "1.9.2", now_micros()).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(key("MRN2", "1.5").await, "study:1.5", "{engine:?}: the study's queued submission's key");
    }
}
