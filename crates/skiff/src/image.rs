//! `skiff image`: the node's image store from the command line (import
//! archives, list, remove, pull) — the store the node agent runs pods from.

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use runtime::cri::ImageService;
use runtime::images::Store;

#[derive(clap::Args)]
#[command(after_help = "The image store lives in DATA_DIR/agent/images (default /var/lib/skiff/agent/images).")]
pub struct ImageArgs {
    /// skiff data directory; images are stored in DATA_DIR/agent/images.
    #[arg(long, default_value = "/var/lib/skiff", global = true)]
    data_dir: PathBuf,
    #[command(subcommand)]
    command: ImageCommand,
}

#[derive(Subcommand)]
enum ImageCommand {
    /// Import the images of a `docker save` tar or an OCI image layout tar.
    Import {
        /// The archive file.
        file: PathBuf,
    },
    /// List images, as `crictl images` does.
    Ls,
    /// Remove images (by name, ID or ID prefix) and the layers no other image uses.
    Rm {
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Pull an image from a registry (anonymously, or with the registries file's credentials).
    Pull {
        image: String,
        /// Registry (host or host:port) to reach over plain HTTP; loopback registries always are.
        #[arg(long)]
        insecure_registry: Vec<String>,
        /// Registry mirrors, rewrites, credentials and TLS settings (k3s's registries.yaml), as the node agent uses.
        #[arg(long, value_name = "FILE", default_value = runtime::images::mirrors::DEFAULT_REGISTRIES_FILE, value_parser = crate::agent::parse_registries)]
        registries: runtime::images::Registries,
    },
}

pub async fn run(args: ImageArgs) -> anyhow::Result<()> {
    let root = args.data_dir.join("agent").join("images");
    let insecure = match &args.command {
        ImageCommand::Pull { insecure_registry, .. } => insecure_registry.clone(),
        _ => Vec::new(),
    };
    let mut store = Store::open(root.clone(), insecure).with_context(|| format!("opening the image store in {}", root.display()))?;
    if let ImageCommand::Pull { registries, .. } = &args.command {
        store = store.with_registries(registries.clone());
    }
    match args.command {
        ImageCommand::Import { file } => {
            for name in store.import(&file).await? {
                println!("imported {name}");
            }
        }
        ImageCommand::Ls => print!("{}", images_table(&store.list_images().await?)),
        ImageCommand::Rm { images } => {
            for image in images {
                let Some(info) = store.image_status(&image).await? else {
                    anyhow::bail!("no image {image:?} in {}; `skiff image ls` lists them", root.display());
                };
                store.remove_image(&info.id).await?;
                println!("Deleted: {}", info.repo_tags.first().unwrap_or(&info.id));
            }
        }
        ImageCommand::Pull { image, .. } => {
            let id = store.pull_image(&image, &[]).await?;
            println!("Image is up to date for {id}");
        }
    }
    Ok(())
}

/// IMAGE, TAG, IMAGE ID (13 hex digits), SIZE: one row per tag, `<none>` for untagged images.
fn images_table(images: &[runtime::cri::ImageInfo]) -> String {
    let mut rows = vec![["IMAGE".to_string(), "TAG".to_string(), "IMAGE ID".to_string(), "SIZE".to_string()]];
    for image in images {
        let id: String = image.id.trim_start_matches("sha256:").chars().take(13).collect();
        let size = human_size(image.size);
        let mut tagged: Vec<(String, String)> = image.repo_tags.iter().map(|t| split_tag(t)).collect();
        if tagged.is_empty() {
            let repo = image.repo_digests.first().and_then(|d| d.split_once('@')).map(|(r, _)| r.to_string());
            tagged.push((repo.unwrap_or_else(|| "<none>".to_string()), "<none>".to_string()));
        }
        for (repo, tag) in tagged {
            rows.push([repo, tag, id.clone(), size.clone()]);
        }
    }
    let widths: Vec<usize> = (0..4).map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row.iter().zip(&widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        out.push_str(line.join("   ").trim_end());
        out.push('\n');
    }
    out
}

/// `repo:tag` into its parts (a `:` before the last `/` is a port).
fn split_tag(name: &str) -> (String, String) {
    let slash = name.rfind('/').map(|i| i + 1).unwrap_or(0);
    match name[slash..].rfind(':') {
        Some(i) => (name[..slash + i].to_string(), name[slash + i + 1..].to_string()),
        None => (name.to_string(), "<none>".to_string()),
    }
}

/// Decimal units with four significant digits, as crictl prints sizes (`4.863MB`).
fn human_size(bytes: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < units.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    let decimals = if value >= 100.0 { 1 } else if value >= 10.0 { 2 } else { 3 };
    let mut s = format!("{value:.decimals$}");
    if s.contains('.') {
        s = s.trim_end_matches('0').trim_end_matches('.').to_string();
    }
    format!("{s}{}", units[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_like_crictl() {
        assert_eq!(human_size(512), "512B");
        assert_eq!(human_size(4_863_000), "4.863MB");
        assert_eq!(human_size(1_240_000), "1.24MB");
        assert_eq!(human_size(123_456_789), "123.5MB");
    }

    #[test]
    fn table_rows_per_tag() {
        let info = runtime::cri::ImageInfo {
            id: format!("sha256:{}", "ab".repeat(32)),
            repo_tags: vec!["localhost:5000/app:v1".into(), "docker.io/library/busybox:latest".into()],
            repo_digests: vec![],
            size: 2_000_000,
        };
        let table = images_table(&[info]);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("IMAGE"));
        assert!(lines[1].starts_with("localhost:5000/app") && lines[1].contains("v1") && lines[1].contains("ababababababa "));
        assert!(lines[2].contains("docker.io/library/busybox") && lines[2].ends_with("2MB"));
    }
}
