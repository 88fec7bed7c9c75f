//! Recurses without bound. `"shadow"`: frames in linear memory (Rust's
//! shadow stack runs off the bottom of memory); `"native"`: small frames on
//! the wasm stack only (hits the engine's max_wasm_stack).
#[expect(unconditional_recursion, reason = "the point of this component")]
fn shadow(n: u64) -> u64 {
    let mut pad = [0u8; 256];
    pad[(n % 256) as usize] = n as u8;
    std::hint::black_box(&mut pad);
    shadow(n + 1) + u64::from(pad[0])
}

#[expect(unconditional_recursion, reason = "the point of this component")]
fn native(n: u64) -> u64 {
    native(std::hint::black_box(n + 1)).wrapping_mul(3)
}

#[warden_sdk::agent]
fn run(kind: String) -> Result<u64, warden_sdk::Error> {
    Ok(if kind == "native" {
        native(0)
    } else {
        shadow(0)
    })
}
