//! Uploads: one put for an object, or a multipart upload for a large one.

use std::sync::Arc;

use object_store::path::Path;
use object_store::{ObjectStore, PutPayload};

/// S3's smallest part of a multipart upload (but the last).
pub(crate) const MIN_PART: usize = 5 << 20;

/// When and how objects are uploaded in parts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Multipart {
    pub(crate) threshold: usize,
    pub(crate) part_size: usize,
}

impl Default for Multipart {
    fn default() -> Self {
        Multipart {
            threshold: 16 << 20,
            part_size: 8 << 20,
        }
    }
}

/// Puts `bytes` at `path`: in one request, or in parts if large. An
/// upload in parts becomes visible only when completed, all at once, as a
/// single put does; one that fails is aborted.
pub(crate) async fn put_object(
    store: Arc<dyn ObjectStore>,
    path: Path,
    bytes: Vec<u8>,
    multipart: Multipart,
) -> Result<(), object_store::Error> {
    if bytes.len() < multipart.threshold {
        return store.put(&path, PutPayload::from(bytes)).await.map(|_| ());
    }
    let upload = store.put_multipart(&path).await?;
    let mut writer = object_store::WriteMultipart::new_with_chunk_size(upload, multipart.part_size);
    let mut bytes = bytes::Bytes::from(bytes);
    while !bytes.is_empty() {
        if let Err(e) = writer.wait_for_capacity(4).await {
            let _ = writer.abort().await;
            return Err(e);
        }
        let piece = bytes.split_to(bytes.len().min(multipart.part_size));
        writer.put(piece);
    }
    // `finish` aborts the upload itself if completing it fails.
    writer.finish().await.map(|_| ())
}
