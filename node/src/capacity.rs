//! What a node reports about its machine when it registers: disk space
//! where it keeps its data, and accelerators (NVIDIA GPUs through
//! `nvidia-smi`, render devices under `/dev/dri`). Finding none is a valid
//! answer; a tool that is missing, slow or says something unexpected is
//! logged and skipped.

use std::path::Path;
use std::time::Duration;
use warden_proto::v1 as pb;

/// Free bytes on the disk holding `dir` (the mount point that is its
/// longest prefix); 0 when unknown.
pub(crate) fn disk_free(dir: &Path) -> u64 {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let disks = sysinfo::Disks::new_with_refreshed_list();
    disks
        .list()
        .iter()
        .filter(|d| dir.starts_with(d.mount_point()))
        .max_by_key(|d| d.mount_point().as_os_str().len())
        .map_or(0, |d| d.available_space())
}

/// The accelerators of this machine.
pub(crate) async fn accelerators() -> Vec<pb::Accelerator> {
    let mut found = nvidia().await;
    found.extend(render_devices());
    found
}

/// NVIDIA GPUs, as `nvidia-smi` lists them (none when it is not installed).
async fn nvidia() -> Vec<pb::Accelerator> {
    let query = tokio::process::Command::new("nvidia-smi")
        .args([
            "--query-gpu=index,name,memory.total",
            "--format=csv,noheader,nounits",
        ])
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(Duration::from_secs(10), query).await {
        Ok(Ok(out)) if out.status.success() => {
            parse_nvidia_smi(&String::from_utf8_lossy(&out.stdout))
        }
        Ok(Ok(out)) => {
            tracing::warn!(status = %out.status, "nvidia-smi failed; reporting no NVIDIA GPUs");
            Vec::new()
        }
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot run nvidia-smi; reporting no NVIDIA GPUs");
            Vec::new()
        }
        Err(_) => {
            tracing::warn!("nvidia-smi did not answer within 10 s; reporting no NVIDIA GPUs");
            Vec::new()
        }
    }
}

/// Most accelerators a node reports (the control plane takes no more).
pub(crate) const MAX_ACCELERATORS: usize = 64;

/// Lines of `index, name, memory.total (MiB)`; lines that are not are
/// skipped.
fn parse_nvidia_smi(text: &str) -> Vec<pb::Accelerator> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split(',').map(str::trim);
            let index = fields.next()?.parse::<u32>().ok()?;
            let name = fields.next()?.chars().take(128).collect::<String>();
            let mib: u64 = fields.next()?.parse().ok()?;
            Some(pb::Accelerator {
                kind: "nvidia".into(),
                name,
                memory_bytes: mib.saturating_mul(1 << 20),
                device: index.to_string(),
            })
        })
        .take(MAX_ACCELERATORS)
        .collect()
}

/// Render devices (`/dev/dri/renderD*`), named by their PCI vendor.
fn render_devices() -> Vec<pb::Accelerator> {
    let Ok(entries) = std::fs::read_dir("/dev/dri") else {
        return Vec::new();
    };
    let mut found: Vec<pb::Accelerator> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with("renderD").then(|| {
                let vendor =
                    std::fs::read_to_string(format!("/sys/class/drm/{name}/device/vendor"))
                        .unwrap_or_default();
                pb::Accelerator {
                    kind: "dri".into(),
                    name: vendor_name(vendor.trim()).into(),
                    memory_bytes: 0,
                    device: format!("/dev/dri/{name}"),
                }
            })
        })
        .take(MAX_ACCELERATORS)
        .collect();
    found.sort_by(|a, b| a.device.cmp(&b.device));
    found
}

fn vendor_name(pci_vendor: &str) -> &'static str {
    match pci_vendor {
        "0x10de" => "nvidia",
        "0x1002" => "amd",
        "0x8086" => "intel",
        _ => "unknown",
    }
}

/// The label a node with accelerators gets unless it was given `gpu`
/// itself: `gpu=nvidia` with NVIDIA GPUs, else the vendor of its first
/// render device; none without.
pub(crate) fn gpu_label(found: &[pb::Accelerator]) -> Option<String> {
    found
        .iter()
        .find(|a| a.kind == "nvidia")
        .or_else(|| found.iter().find(|a| a.name != "unknown"))
        .map(|a| {
            if a.kind == "nvidia" {
                "nvidia".to_string()
            } else {
                a.name.clone()
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nvidia_smi_lines_become_gpus_and_others_are_skipped() {
        let gpus = parse_nvidia_smi(
            "0, NVIDIA A100-SXM4-40GB, 40960\n1, NVIDIA L4, 23034\nNo devices were found\n2, x, y\n",
        );
        assert_eq!(gpus.len(), 2);
        assert_eq!(gpus[0].name, "NVIDIA A100-SXM4-40GB");
        assert_eq!(gpus[0].memory_bytes, 40960 << 20);
        assert_eq!(gpus[1].device, "1");
        assert_eq!(gpu_label(&gpus).as_deref(), Some("nvidia"));
        assert_eq!(gpu_label(&[]), None);
    }

    #[test]
    fn the_data_dir_has_free_space() {
        let dir = tempfile::tempdir().unwrap();
        assert!(disk_free(dir.path()) > 0);
    }
}
