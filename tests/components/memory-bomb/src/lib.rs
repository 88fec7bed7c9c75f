//! A memory.grow bomb: allocates and fills 1 MiB blocks forever, so every
//! page it grows is touched (resident), until something stops it.
#[warden_sdk::agent]
fn run(_input: serde_json::Value) -> Result<usize, warden_sdk::Error> {
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    loop {
        blocks.push(vec![0xA5; 1 << 20]);
        std::hint::black_box(&blocks);
    }
}
