//! Concurrent Flight full scans while writing: each scanner repeatedly reads
//! the whole `cpu` table of the buffer (`include_persisted = false`) and
//! records the scan's latency and its time to first record batch.
//!
//! Rows are counted from each IPC message header (a flatbuffer read), not by
//! decoding the batches, so the scanners' own CPU cost stays small and what is
//! measured is the server's.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use arrow::ipc::{MessageHeader, root_as_message};
use arrow_flight::Ticket;
use arrow_flight::flight_service_client::FlightServiceClient;
use futures::StreamExt;
use hdrhistogram::Histogram;
use prost::Message;
use sluice_proto::v1;

use super::Shared;
use super::auth::ClientAuth;
use super::stats::{new_hist, record};
use super::target::grpc_channel;
use super::workload::MEASUREMENT;

/// One scanner's results.
#[derive(Debug)]
pub struct ScanStats {
    pub scans: u64,
    pub rows: u64,
    pub latency: Histogram<u64>,
    pub first_batch: Histogram<u64>,
    pub errors: BTreeMap<String, u64>,
}

/// Scans until `shared.stop`; only scans that finish inside the measured
/// window are counted.
pub async fn scanner(
    addr: String,
    auth: ClientAuth,
    namespace: String,
    shared: Arc<Shared>,
) -> ScanStats {
    let mut st = ScanStats {
        scans: 0,
        rows: 0,
        latency: new_hist(),
        first_batch: new_hist(),
        errors: BTreeMap::new(),
    };
    let ticket = Ticket {
        ticket: v1::QueryRequest {
            namespace,
            table: MEASUREMENT.into(),
            include_persisted: false,
            ..Default::default()
        }
        .encode_to_vec()
        .into(),
    };
    let mut client = None;
    while !shared.stop.load(Ordering::Relaxed) {
        if client.is_none() {
            match grpc_channel(&addr, &auth).await {
                Ok(ch) => {
                    client = Some(
                        FlightServiceClient::new(ch)
                            .max_decoding_message_size(usize::MAX)
                            .max_encoding_message_size(usize::MAX),
                    )
                }
                Err(e) => {
                    *st.errors.entry(format!("connect: {e}")).or_default() += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            }
        }
        let c = client.as_mut().expect("connected above");
        let start = Instant::now();
        let mut first = None;
        let mut rows = 0u64;
        let result: Result<(), String> = async {
            let mut stream = c
                .do_get(auth.request(ticket.clone()))
                .await
                .map_err(|s| format!("grpc:{:?}", s.code()))?
                .into_inner();
            while let Some(msg) = stream.next().await {
                let fd = msg.map_err(|s| format!("grpc:{:?}", s.code()))?;
                if fd.data_header.is_empty() {
                    continue;
                }
                let m =
                    root_as_message(&fd.data_header).map_err(|_| "bad IPC header".to_string())?;
                if m.header_type() == MessageHeader::RecordBatch
                    && let Some(rb) = m.header_as_record_batch()
                {
                    first.get_or_insert_with(|| start.elapsed());
                    rows += rb.length() as u64;
                }
            }
            Ok(())
        }
        .await;
        let elapsed = start.elapsed();
        let measuring =
            shared.measuring.load(Ordering::Relaxed) && !shared.stop.load(Ordering::Relaxed);
        match result {
            Ok(()) if measuring => {
                st.scans += 1;
                st.rows += rows;
                record(&mut st.latency, elapsed);
                if let Some(f) = first {
                    record(&mut st.first_batch, f);
                }
            }
            Ok(()) => {}
            Err(e) => {
                if e.starts_with("grpc:NotFound") {
                    // The table does not exist before the first write lands.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                if measuring {
                    *st.errors.entry(e).or_default() += 1;
                }
                client = None;
            }
        }
    }
    st
}
