//! Sums `iterations` numbers: finite CPU work for fuel budgets.
#[derive(serde::Deserialize)]
struct Input {
    iterations: u64,
}

#[warden_sdk::agent]
fn run(input: Input) -> Result<u64, warden_sdk::Error> {
    let mut sum = 0u64;
    for i in 0..input.iterations {
        sum = sum.wrapping_add(std::hint::black_box(i));
    }
    Ok(sum)
}
