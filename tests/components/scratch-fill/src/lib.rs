//! Uses its scratch directory as an attacker or a heavy user would.
//! `{"mode": ...}`:
//! - `fill`: appends `chunk`-byte writes to one file until a write fails;
//! - `files`: creates empty files until a create fails;
//! - `rewrite`: writes a `size`-byte file `times` times over (each write
//!   truncates it first), then removes it;
//! - `churn`: `times` times, writes a `size`-byte file and removes it;
//! - `links`: makes one file, then hard links to it until one fails.
//!
//! Returns what it managed and the error that stopped it, if any.
use std::io::Write;

#[derive(serde::Deserialize)]
struct Input {
    mode: String,
    #[serde(default = "chunk")]
    chunk: usize,
    #[serde(default)]
    size: usize,
    #[serde(default)]
    times: usize,
}

fn chunk() -> usize {
    64 << 10
}

#[derive(serde::Serialize, Default)]
struct Report {
    bytes: u64,
    files: u64,
    /// The file's size as the filesystem reports it, after `fill`.
    on_disk: u64,
    error: Option<String>,
}

fn kind(e: &std::io::Error) -> String {
    format!("{:?} {:?}", e.kind(), e.raw_os_error())
}

#[warden_sdk::agent]
fn run(input: Input) -> Result<Report, warden_sdk::Error> {
    let mut report = Report::default();
    match input.mode.as_str() {
        "fill" => {
            let mut file = std::fs::File::create("/scratch/fill")?;
            let data = vec![7u8; input.chunk];
            loop {
                if let Err(e) = file.write_all(&data).and_then(|()| file.flush()) {
                    report.error = Some(kind(&e));
                    break;
                }
                report.bytes += data.len() as u64;
            }
            drop(file);
            report.on_disk = std::fs::metadata("/scratch/fill")?.len();
        }
        "files" => loop {
            match std::fs::File::create(format!("/scratch/f{}", report.files)) {
                Ok(_) => report.files += 1,
                Err(e) => {
                    report.error = Some(kind(&e));
                    break;
                }
            }
        },
        "links" => {
            std::fs::write("/scratch/target", b"x")?;
            loop {
                match std::fs::hard_link("/scratch/target", format!("/scratch/l{}", report.files)) {
                    Ok(()) => report.files += 1,
                    Err(e) => {
                        report.error = Some(kind(&e));
                        break;
                    }
                }
            }
        }
        "rewrite" | "churn" => {
            let data = vec![1u8; input.size];
            for _ in 0..input.times {
                std::fs::write("/scratch/file", &data)?;
                report.bytes += data.len() as u64;
                if input.mode == "churn" {
                    std::fs::remove_file("/scratch/file")?;
                }
            }
            if input.mode == "rewrite" {
                std::fs::remove_file("/scratch/file")?;
            }
        }
        other => return Err(warden_sdk::Error::msg(format!("unknown mode {other}"))),
    }
    Ok(report)
}
