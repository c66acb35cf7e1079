//! The bench's workloads: one product table each, written on the source as inserts in
//! transactions of 100 rows and then updates in transactions of 10.
//!
//! - **W1**, narrow rows (`product.product`): 7 columns of codes, a YEAR, a DECIMAL price.
//! - **W2**, wide rows (`wide.product`): 10 columns — a 100–180-character name, a JSON object
//!   of 7 keys, two DATETIME(6), two DECIMALs (one nullable), a two-column secondary key; an
//!   update changes the price, two JSON keys (`JSON_SET`), `updated_at` and the version.
//!
//! Every value is a function of the row's id and its number of updates, computed on the server
//! from `seq_X_to_Y` (no `NOW()`, no randomness), so a run's fingerprints are reproducible. The
//! apply floor needs the same final rows as SQL literals: [`Workload::floor_row`] computes in
//! Rust what the server computes, from the same word lists, and the floor's fingerprint is
//! checked against the source's, so the two cannot drift apart unseen.

use std::fmt::Write as _;

/// One of the bench's workloads (the `--workloads` values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// Narrow product rows (`product.product`).
    W1,
    /// Wide product rows (`wide.product`): JSON, DATETIME(6), VARCHAR(200), DECIMAL.
    W2,
}

/// W2's name is "Product ID " and one of these, repeated 8–13 times.
const FINISHES: [&str; 4] = [
    "brushed steel ",
    "oiled oak ",
    "washed linen ",
    "smoked glass ",
];
const COLORS: [&str; 5] = ["red", "green", "blue", "black", "white"];
const SIZES: [&str; 4] = ["S", "M", "L", "XL"];
const ORIGINS: [&str; 6] = ["PT", "VN", "MX", "PL", "TR", "IN"];
/// W2's `created_at` is this plus `id % 1,000,000` times `CREATED_STEP_US` (at most 11.6 days
/// later), and each update moves `updated_at` on by `UPDATED_STEP_US`: the dates stay in
/// January for up to a million updates of a row, which `datetime` relies on.
const EPOCH: &str = "2024-01-01 00:00:00";
const CREATED_STEP_US: u64 = 1_000_003;
const UPDATED_STEP_US: u64 = 1_000_001;

/// `ELT(1 + index, 'a', 'b', …)`: the SQL twin of `items[index]`.
fn elt(index: &str, items: &[&str]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| format!("'{i}'")).collect();
    format!("ELT(1 + {index}, {})", quoted.join(", "))
}

fn pick(items: &[&'static str], n: u64) -> &'static str {
    items[(n % items.len() as u64) as usize]
}

/// `EPOCH` plus `us` microseconds, as MariaDB prints a DATETIME(6) within January 2024.
fn datetime(us: u64) -> String {
    const DAY_US: u64 = 86_400_000_000;
    let (day, rest) = (1 + us / DAY_US, us % DAY_US);
    let (secs, micros) = (rest / 1_000_000, rest % 1_000_000);
    format!(
        "2024-01-{day:02} {:02}:{:02}:{:02}.{micros:06}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// A DECIMAL with `scale` digits, from its value in units of 10^-scale.
fn decimal(units: u64, scale: u32) -> String {
    let one = 10u64.pow(scale);
    format!(
        "{}.{:0width$}",
        units / one,
        units % one,
        width = scale as usize
    )
}

impl Workload {
    pub const ALL: [Workload; 2] = [Workload::W1, Workload::W2];

    pub fn name(self) -> &'static str {
        match self {
            Workload::W1 => "W1",
            Workload::W2 => "W2",
        }
    }

    /// What its rows are like, for headers.
    pub fn kind(self) -> &'static str {
        match self {
            Workload::W1 => "narrow rows: VARCHAR, YEAR, DECIMAL, secondary key",
            Workload::W2 => "wide rows: JSON, DATETIME(6), VARCHAR(200), DECIMAL, secondary key",
        }
    }

    /// The source database of its catch-up backlog, so each catch-up waits for its own.
    pub fn database(self) -> &'static str {
        match self {
            Workload::W1 => "product",
            Workload::W2 => "wide",
        }
    }

    /// The source database of its steady-lag load.
    pub fn steady_database(self) -> &'static str {
        match self {
            Workload::W1 => "steady",
            Workload::W2 => "steadywide",
        }
    }

    /// Added to the server ids (local servers and rowsync's) of its runs, so no two runs share
    /// one.
    pub fn id_offset(self) -> u32 {
        match self {
            Workload::W1 => 0,
            Workload::W2 => 20,
        }
    }

    /// A directory name for one of its servers.
    pub fn dir(self, name: &str) -> String {
        format!("{}-{name}", self.name().to_lowercase())
    }

    /// `CREATE TABLE db.product`.
    pub fn create_table(self, db: &str) -> String {
        match self {
            Workload::W1 => format!("CREATE TABLE {db}.product (id BIGINT UNSIGNED PRIMARY KEY, code VARCHAR(32) NOT NULL, model VARCHAR(100) NOT NULL, category_id INT NOT NULL, production_year YEAR NOT NULL, price DECIMAL(12,2) NOT NULL, version INT NOT NULL, KEY idx_category (category_id)) ENGINE=InnoDB"),
            Workload::W2 => format!("CREATE TABLE {db}.product (id BIGINT UNSIGNED PRIMARY KEY, sku VARCHAR(32) NOT NULL, name VARCHAR(200) NOT NULL, category_id INT NOT NULL, price DECIMAL(12,2) NOT NULL, weight_kg DECIMAL(8,3) NULL, attrs JSON NOT NULL, created_at DATETIME(6) NOT NULL, updated_at DATETIME(6) NOT NULL, version INT NOT NULL, KEY idx_category (category_id, price)) ENGINE=InnoDB"),
        }
    }

    /// One statement inserting rows `first..=last` (version 0) into `db.product`; it reads
    /// `seq_first_to_last`, so the connection needs a current database.
    pub fn insert(self, db: &str, first: u64, last: u64) -> String {
        let values = match self {
            Workload::W1 => "seq, CONCAT('PRD-', seq), CONCAT('model ', seq % 97), 1 + seq % 12, 2015 + seq % 11, 10 + seq % 1000, 0".to_string(),
            Workload::W2 => {
                let created = format!(
                    "TIMESTAMP'{EPOCH}' + INTERVAL (seq % 1000000) * {CREATED_STEP_US} MICROSECOND"
                );
                format!(
                    "seq, CONCAT('SKU-', LPAD(seq, 10, '0')), CONCAT('Product ', seq, ' ', REPEAT({}, 8 + seq % 6)), 1 + seq % 50, (500 + seq % 10000) / 100, IF(seq % 10 = 0, NULL, (seq % 50000) / 1000), JSON_OBJECT('color', {}, 'size', {}, 'origin', {}, 'warehouse', CONCAT('WH-', 1 + seq % 12), 'stock', seq % 500, 'revision', 0, 'tags', JSON_ARRAY(CONCAT('c', 1 + seq % 50), IF(seq % 3 = 0, 'sale', 'new'))), {created}, {created}, 0",
                    elt("seq % 4", &FINISHES),
                    elt("seq % 5", &COLORS),
                    elt("seq % 4", &SIZES),
                    elt("seq % 6", &ORIGINS),
                )
            }
        };
        format!("INSERT INTO {db}.product SELECT {values} FROM seq_{first}_to_{last}")
    }

    /// One statement updating rows `first..=last` of `db.product` once.
    pub fn update(self, db: &str, first: u64, last: u64) -> String {
        // Single-table UPDATE assigns left to right: `version` last, so the others see the
        // old one.
        let set = match self {
            Workload::W1 => "price = price + 1, version = version + 1".to_string(),
            Workload::W2 => format!("price = price + 1, attrs = JSON_SET(attrs, '$.stock', id % 500 + version + 1, '$.revision', version + 1), updated_at = updated_at + INTERVAL {UPDATED_STEP_US} MICROSECOND, version = version + 1"),
        };
        format!("UPDATE {db}.product SET {set} WHERE id BETWEEN {first} AND {last}")
    }

    /// Every column of a row as one text (NULL spelled out), for fingerprints and row sizes.
    /// JSON is compared as its text: replicas may hold it as LONGTEXT.
    pub fn row_text(self) -> &'static str {
        match self {
            Workload::W1 => "CONCAT_WS('|', id, code, model, category_id, production_year, price, version)",
            Workload::W2 => "CONCAT_WS('|', id, sku, name, category_id, price, IFNULL(weight_kg, 'NULL'), CAST(attrs AS CHAR), created_at, updated_at, version)",
        }
    }

    /// `(row count, checksum text)` of `db.product`, equal on equal tables.
    pub fn fingerprint_sql(self, db: &str) -> String {
        format!(
            "SELECT COUNT(*), CAST(SUM(CRC32({})) AS CHAR) FROM {db}.product",
            self.row_text()
        )
    }

    /// Row `id` after `version` updates, as a VALUES tuple (what the source holds after the
    /// statements above).
    pub fn floor_row(self, id: u64, version: u64) -> String {
        let mut row = String::new();
        match self {
            Workload::W1 => {
                let _ = write!(
                    row,
                    "({id}, 'PRD-{id}', 'model {}', {}, {}, {}, {version})",
                    id % 97,
                    1 + id % 12,
                    2015 + id % 11,
                    10 + id % 1000 + version
                );
            }
            Workload::W2 => {
                let name = format!(
                    "Product {id} {}",
                    pick(&FINISHES, id).repeat((8 + id % 6) as usize)
                );
                let weight = if id.is_multiple_of(10) {
                    "NULL".to_string()
                } else {
                    decimal(id % 50_000, 3)
                };
                let attrs = format!(
                    r#"{{"color": "{}", "size": "{}", "origin": "{}", "warehouse": "WH-{}", "stock": {}, "revision": {version}, "tags": ["c{}", "{}"]}}"#,
                    pick(&COLORS, id),
                    pick(&SIZES, id),
                    pick(&ORIGINS, id),
                    1 + id % 12,
                    id % 500 + version,
                    1 + id % 50,
                    if id.is_multiple_of(3) { "sale" } else { "new" }
                );
                let created = (id % 1_000_000) * CREATED_STEP_US;
                let _ = write!(
                    row,
                    "({id}, 'SKU-{id:010}', '{name}', {}, {}, {weight}, '{attrs}', '{}', '{}', {version})",
                    1 + id % 50,
                    decimal(500 + id % 10_000 + 100 * version, 2),
                    datetime(created),
                    datetime(created + version * UPDATED_STEP_US)
                );
            }
        }
        row
    }

    /// The columns an update changes, as the floor's `ON DUPLICATE KEY UPDATE` list.
    pub fn floor_upsert(self) -> &'static str {
        match self {
            Workload::W1 => "price = VALUES(price), version = VALUES(version)",
            Workload::W2 => "price = VALUES(price), attrs = VALUES(attrs), updated_at = VALUES(updated_at), version = VALUES(version)",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn w2_rows_print_like_the_server() {
        // As MariaDB 10.11 prints row 10 after 2 updates (NULL weight, sale-less tags).
        assert_eq!(
            Workload::W2.floor_row(10, 2),
            "(10, 'SKU-0000000010', 'Product 10 washed linen washed linen washed linen washed linen washed linen washed linen washed linen washed linen washed linen washed linen washed linen washed linen ', 11, 7.10, NULL, '{\"color\": \"red\", \"size\": \"L\", \"origin\": \"TR\", \"warehouse\": \"WH-11\", \"stock\": 12, \"revision\": 2, \"tags\": [\"c11\", \"new\"]}', '2024-01-01 00:00:10.000030', '2024-01-01 00:00:12.000032', 2)"
        );
        assert_eq!(
            datetime(86_400_000_000 + 3_723_000_004),
            "2024-01-02 01:02:03.000004"
        );
        assert_eq!(decimal(5, 3), "0.005");
    }
}
