//! Exports and imports as the control plane keeps them: one record per
//! job, by its ARN, in the catalog group, so DescribeExport, ListExports,
//! DescribeImport and ListImports answer from any node and a job outlives
//! the node that ran it (the next control-plane leader carries it on from
//! the progress recorded here).

use serde::{Deserialize, Serialize};

pub const JOB_IN_PROGRESS: &str = "IN_PROGRESS";
pub const JOB_COMPLETED: &str = "COMPLETED";
pub const JOB_FAILED: &str = "FAILED";

/// One export or import.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    /// ExportArn or ImportArn; the record's key.
    pub arn: String,
    pub client_token: String,
    /// The catalog name of the table exported, or imported into.
    pub table: String,
    pub table_arn: String,
    pub table_id: String,
    /// IN_PROGRESS, COMPLETED or FAILED.
    pub status: String,
    pub start_ms: u64,
    pub end_ms: Option<u64>,
    pub bucket: String,
    pub bucket_owner: Option<String>,
    /// S3Prefix of an export, S3KeyPrefix of an import.
    pub prefix: Option<String>,
    /// ExportFormat or InputFormat.
    pub format: String,
    /// FailureCode and FailureMessage, once FAILED.
    pub failure: Option<(String, String)>,
    /// Items exported, or processed by an import.
    pub items: u64,
    /// Bytes exported (BilledSizeBytes), or processed by an import.
    pub bytes: u64,
    pub kind: JobKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobKind {
    Export(ExportJob),
    Import(ImportJob),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportJob {
    /// The moment exported (ExportTime), in milliseconds.
    pub export_ms: u64,
    pub sse_algorithm: Option<String>,
    pub sse_kms_key_id: Option<String>,
    /// Data files written so far, in order.
    pub files: Vec<DataFile>,
    /// Where the snapshot's scan resumes: after this storage key (`None`:
    /// from the start, or nowhere once `scanned`).
    pub next: Option<Vec<u8>>,
    /// Every item of the snapshot is in `files`.
    pub scanned: bool,
    /// An incremental export's window and view (a full export: `None`).
    #[serde(default)]
    pub incremental: Option<Incremental>,
}

/// IncrementalExportSpecification: the changes of `[from_ms, to_ms)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incremental {
    pub from_ms: u64,
    pub to_ms: u64,
    /// NEW_IMAGE or NEW_AND_OLD_IMAGES.
    pub view: String,
}

/// One data file of an export, as manifest-files.json lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataFile {
    pub key: String,
    pub items: u64,
    /// Base64 of the file's MD5, and its ETag (hex MD5, as S3 gives a
    /// single-part upload).
    pub md5: String,
    pub etag: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportJob {
    /// InputCompressionType: GZIP, ZSTD or NONE.
    pub compression: String,
    /// InputFormatOptions.Csv: Delimiter and HeaderList.
    pub csv_delimiter: Option<String>,
    pub csv_header: Option<Vec<String>>,
    /// TableCreationParameters as the request gave them (DescribeImport
    /// returns them).
    pub creation: String,
    /// Items written to the table, and lines that could not be.
    pub imported: u64,
    pub errors: u64,
    /// Objects read to the end, by key.
    pub done_files: Vec<String>,
}

impl Job {
    pub fn finished(&self) -> bool {
        self.status != JOB_IN_PROGRESS
    }
}
