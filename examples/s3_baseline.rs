//! Baseline for the remote benchmark: upload every file of a folder to S3 with a plain
//! `object_store` loop (16 uploads in flight on one async thread, file reads on the blocking pool), as `aws s3 sync` would, with the same client
//! library cohort uses. Credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY.
//!
//! `cargo run --release --example s3_baseline -- DIR BUCKET PREFIX ENDPOINT REGION`

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::StreamExt;
use object_store::ObjectStore;

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read folder") {
        let p = e.expect("entry").path();
        if p.file_name().is_some_and(|n| n == ".cohort") {
            continue;
        }
        if p.is_dir() {
            files(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() != 6 {
        eprintln!("usage: s3_baseline DIR BUCKET PREFIX ENDPOINT REGION");
        std::process::exit(2);
    }
    let (dir, bucket, prefix, endpoint, region) = (PathBuf::from(&a[1]), &a[2], a[3].clone(), &a[4], &a[5]);
    let store: Arc<dyn ObjectStore> = Arc::new(
        object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_endpoint(endpoint)
            .with_region(region)
            .with_allow_http(true)
            .with_virtual_hosted_style_request(false)
            .with_access_key_id(std::env::var("AWS_ACCESS_KEY_ID").expect("AWS_ACCESS_KEY_ID"))
            .with_secret_access_key(std::env::var("AWS_SECRET_ACCESS_KEY").expect("AWS_SECRET_ACCESS_KEY"))
            .build()
            .expect("S3 client"),
    );
    let mut list = Vec::new();
    files(&dir, &mut list);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let start = std::time::Instant::now();
    let total: u64 = rt.block_on(async {
        futures::stream::iter(list.into_iter().map(|p| {
            let store = store.clone();
            let key = format!("{prefix}/{}", p.strip_prefix(&dir).expect("below dir").display());
            async move {
                let bytes = tokio::task::spawn_blocking(move || std::fs::read(&p).expect("read")).await.expect("join");
                let n = bytes.len() as u64;
                store.put(&object_store::path::Path::from(key), bytes.into()).await.expect("put");
                n
            }
        }))
        .buffer_unordered(16)
        .fold(0u64, |a, n| async move { a + n })
        .await
    });
    println!("uploaded {total} bytes in {:.2} s", start.elapsed().as_secs_f64());
}
