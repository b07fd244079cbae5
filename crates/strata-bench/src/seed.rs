//! `strata seed`: bulk-load realistic synthetic users.
//!
//! Users are generated from a seeded RNG (the same `--rng-seed` gives the same people) on a
//! separate thread while the previous batch is being inserted, and loaded with
//! `Store::insert_batch` — one transaction per batch (SQLite: one INSERT per row in it; PostgreSQL: one
//! `COPY` per batch). Ids are Snowflakes from node id 1023,
//! which is reserved for seeding so seeded ids never collide with ids an API server issues.
//!
//! Why this file is long: two thirds of it are the name, city and street tables the synthetic
//! people are drawn from (data, not logic).

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use strata_core::id::{MAX_NODE_ID, SnowflakeGenerator};
use strata_core::user::{IdField, User, UserId, UserProfile};

/// The Snowflake node id used for seeded users.
pub const SEED_NODE_ID: u16 = MAX_NODE_ID;
/// The most users one `strata seed` run loads.
pub const MAX_USERS: u64 = 100_000_000;

#[derive(Debug, clap::Args)]
pub struct SeedArgs {
    /// How many users to create (1 to 100,000,000).
    #[arg(long)]
    pub users: u64,
    /// A deployment directory made by `strata up`: load into its database — its shard groups
    /// (SQLite files or PostgreSQL clusters), its PostgreSQL primary, or its SQLite data
    /// directory — as its API servers use it.
    #[arg(long, env = "STRATA_DIR", conflicts_with_all = ["data", "postgres", "postgres_shards", "shards"])]
    pub dir: Option<PathBuf>,
    /// Data directory to load into (created if missing).
    #[arg(long, env = "STRATA_DATA", default_value = ".strata/data")]
    pub data: PathBuf,
    /// Load into PostgreSQL instead (with COPY): postgresql://USER@HOST:PORT/DB. Never logged.
    #[arg(long, env = "STRATA_POSTGRES_URL", hide_env_values = true)]
    pub postgres: Option<String>,
    /// Users per transaction.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub batch_size: u64,
    /// Seed of the random generator: the same seed gives the same users.
    #[arg(long, default_value_t = 12)]
    pub rng_seed: u64,
    /// Spread the users over this many embedded shard groups (a new data directory), or check
    /// the count of an already sharded one.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=255), conflicts_with = "postgres")]
    pub shards: Option<u16>,
    /// Load into shard groups on PostgreSQL instead: NAME=URL per group (repeat, or
    /// `;`-separate in the environment: one URL may list several hosts with commas); the shard map lives in --data. Never logged.
    #[arg(
        long = "postgres-shard",
        env = "STRATA_POSTGRES_SHARDS",
        value_delimiter = ';',
        hide_env_values = true,
        conflicts_with = "postgres"
    )]
    pub postgres_shards: Vec<String>,
    /// The shard map's home of the deployment in --dir (its etcd, when it keeps it there).
    #[arg(skip)]
    pub map_home: Option<strata_store::map_home::MapHomeHandle>,
}

const FIRST_NAMES: &[&str] = &[
    "James",
    "Mary",
    "Robert",
    "Patricia",
    "John",
    "Jennifer",
    "Michael",
    "Linda",
    "David",
    "Elizabeth",
    "William",
    "Barbara",
    "Richard",
    "Susan",
    "Joseph",
    "Jessica",
    "Thomas",
    "Sarah",
    "Charles",
    "Karen",
    "Christopher",
    "Lisa",
    "Daniel",
    "Nancy",
    "Matthew",
    "Betty",
    "Anthony",
    "Sandra",
    "Mark",
    "Margaret",
    "Donald",
    "Ashley",
    "Steven",
    "Kimberly",
    "Andrew",
    "Emily",
    "Paul",
    "Donna",
    "Joshua",
    "Michelle",
    "Kenneth",
    "Carol",
    "Kevin",
    "Amanda",
    "Brian",
    "Melissa",
    "George",
    "Deborah",
    "Timothy",
    "Stephanie",
    "Ronald",
    "Dorothy",
    "Jason",
    "Rebecca",
    "Edward",
    "Sharon",
    "Jeffrey",
    "Laura",
    "Ryan",
    "Cynthia",
    "Jacob",
    "Amy",
    "Gary",
    "Kathleen",
    "Nicholas",
    "Angela",
    "Eric",
    "Shirley",
    "Jonathan",
    "Brenda",
    "Stephen",
    "Emma",
    "Larry",
    "Anna",
    "Justin",
    "Pamela",
    "Scott",
    "Nicole",
    "Brandon",
    "Samantha",
    "Benjamin",
    "Katherine",
    "Samuel",
    "Christine",
    "Gregory",
    "Helen",
    "Alexander",
    "Debra",
    "Patrick",
    "Rachel",
    "Frank",
    "Carolyn",
    "Raymond",
    "Janet",
    "Jack",
    "Maria",
    "Dennis",
    "Catherine",
    "Jerry",
    "Heather",
    "Tyler",
    "Diane",
    "Aaron",
    "Olivia",
    "José",
    "Julie",
    "Adam",
    "Joyce",
    "Nathan",
    "Victoria",
    "Henry",
    "Ruth",
    "Zachary",
    "Virginia",
    "Douglas",
    "Lauren",
    "Peter",
    "Kelly",
    "Kyle",
    "Christina",
    "Noah",
    "Joan",
    "Ethan",
    "Evelyn",
    "Jeremy",
    "Judith",
    "Christian",
    "Andrea",
    "Walter",
    "Hannah",
    "Keith",
    "Megan",
    "Austin",
    "Cheryl",
    "Roger",
    "Jacqueline",
    "Terry",
    "Martha",
    "Sean",
    "Madison",
    "Gerald",
    "Teresa",
    "Carl",
    "Gloria",
    "Dylan",
    "Sara",
    "Harold",
    "Janice",
    "Jordan",
    "Ann",
    "Jesse",
    "Kathryn",
    "Bryan",
    "Abigail",
    "Lawrence",
    "Sophia",
    "Arthur",
    "Frances",
    "Gabriel",
    "Jean",
    "Bruce",
    "Alice",
    "Logan",
    "Judy",
    "Billy",
    "Isabella",
    "Joe",
    "Julia",
    "Alan",
    "Grace",
    "Juan",
    "Amber",
    "Elijah",
    "Denise",
    "Willie",
    "Danielle",
    "Albert",
    "Marilyn",
    "Wayne",
    "Beverly",
    "Randy",
    "Charlotte",
    "Mason",
    "Natalie",
    "Vincent",
    "Theresa",
    "Liam",
    "Diana",
    "Roy",
    "Brittany",
    "Bobby",
    "Doris",
    "Caleb",
    "Kayla",
    "Bradley",
    "Alexis",
    "Russell",
    "Lori",
    "Lucas",
    "Marie",
    "Zoë",
    "Chloé",
    "Mateo",
    "Aarav",
    "Mei",
    "Hiroshi",
    "Fatima",
    "Oluwaseun",
    "Siobhán",
    "Björn",
    "Renée",
    "Łukasz",
];

const LAST_NAMES: &[&str] = &[
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Garcia",
    "Miller",
    "Davis",
    "Rodriguez",
    "Martinez",
    "Hernandez",
    "Lopez",
    "Gonzalez",
    "Wilson",
    "Anderson",
    "Thomas",
    "Taylor",
    "Moore",
    "Jackson",
    "Martin",
    "Lee",
    "Perez",
    "Thompson",
    "White",
    "Harris",
    "Sanchez",
    "Clark",
    "Ramirez",
    "Lewis",
    "Robinson",
    "Walker",
    "Young",
    "Allen",
    "King",
    "Wright",
    "Scott",
    "Torres",
    "Nguyen",
    "Hill",
    "Flores",
    "Green",
    "Adams",
    "Nelson",
    "Baker",
    "Hall",
    "Rivera",
    "Campbell",
    "Mitchell",
    "Carter",
    "Roberts",
    "Gomez",
    "Phillips",
    "Evans",
    "Turner",
    "Diaz",
    "Parker",
    "Cruz",
    "Edwards",
    "Collins",
    "Reyes",
    "Stewart",
    "Morris",
    "Morales",
    "Murphy",
    "Cook",
    "Rogers",
    "Gutierrez",
    "Ortiz",
    "Morgan",
    "Cooper",
    "Peterson",
    "Bailey",
    "Reed",
    "Kelly",
    "Howard",
    "Ramos",
    "Kim",
    "Cox",
    "Ward",
    "Richardson",
    "Watson",
    "Brooks",
    "Chavez",
    "Wood",
    "James",
    "Bennett",
    "Gray",
    "Mendoza",
    "Ruiz",
    "Hughes",
    "Price",
    "Alvarez",
    "Castillo",
    "Sanders",
    "Patel",
    "Myers",
    "Long",
    "Ross",
    "Foster",
    "Jimenez",
    "Powell",
    "Jenkins",
    "Perry",
    "Russell",
    "Sullivan",
    "Bell",
    "Coleman",
    "Butler",
    "Henderson",
    "Barnes",
    "Gonzales",
    "Fisher",
    "Vasquez",
    "Simmons",
    "Romero",
    "Jordan",
    "Patterson",
    "Alexander",
    "Hamilton",
    "Graham",
    "Reynolds",
    "Griffin",
    "Wallace",
    "Moreno",
    "West",
    "Cole",
    "Hayes",
    "Bryant",
    "Herrera",
    "Gibson",
    "Ellis",
    "Tran",
    "Medina",
    "Aguilar",
    "Stevens",
    "Murray",
    "Ford",
    "Castro",
    "Marshall",
    "Owens",
    "Harrison",
    "Fernandez",
    "McDonald",
    "Woods",
    "Washington",
    "Kennedy",
    "Wells",
    "Vargas",
    "Henry",
    "Chen",
    "Freeman",
    "Webb",
    "Tucker",
    "Guzman",
    "Burns",
    "Crawford",
    "Olson",
    "Simpson",
    "Porter",
    "Hunter",
    "Gordon",
    "Mendez",
    "Silva",
    "Shaw",
    "Snyder",
    "Mason",
    "Dixon",
    "Muñoz",
    "Hunt",
    "Hicks",
    "Holmes",
    "Palmer",
    "Wagner",
    "Black",
    "Robertson",
    "Boyd",
    "O'Brien",
    "D'Angelo",
    "van der Berg",
    "Nakamura",
    "Okafor",
    "Kowalski",
    "Singh",
    "Müller",
    "Rossi",
    "Dubois",
];

/// (city, state, lowest ZIP, highest ZIP, area codes)
const CITIES: &[(&str, &str, u32, u32, &[u16])] = &[
    ("New York", "NY", 10001, 10292, &[212, 646, 917]),
    ("Brooklyn", "NY", 11201, 11256, &[718, 347]),
    ("Los Angeles", "CA", 90001, 90089, &[213, 323, 310]),
    ("San Francisco", "CA", 94102, 94188, &[415, 628]),
    ("San Diego", "CA", 92101, 92199, &[619, 858]),
    ("Chicago", "IL", 60601, 60827, &[312, 773, 872]),
    ("Houston", "TX", 77001, 77299, &[713, 281, 832]),
    ("Austin", "TX", 73301, 78799, &[512, 737]),
    ("Dallas", "TX", 75201, 75398, &[214, 469, 972]),
    ("Phoenix", "AZ", 85001, 85099, &[602, 480]),
    ("Philadelphia", "PA", 19101, 19199, &[215, 267]),
    ("Pittsburgh", "PA", 15201, 15295, &[412]),
    ("Seattle", "WA", 98101, 98199, &[206]),
    ("Portland", "OR", 97201, 97299, &[503, 971]),
    ("Denver", "CO", 80201, 80299, &[303, 720]),
    ("Miami", "FL", 33101, 33199, &[305, 786]),
    ("Orlando", "FL", 32801, 32899, &[407, 321]),
    ("Atlanta", "GA", 30301, 30399, &[404, 678, 470]),
    ("Nashville", "TN", 37201, 37250, &[615, 629]),
    ("Detroit", "MI", 48201, 48288, &[313]),
    ("Minneapolis", "MN", 55401, 55488, &[612]),
    ("Kansas City", "MO", 64101, 64199, &[816]),
    ("New Orleans", "LA", 70112, 70195, &[504]),
    ("Salt Lake City", "UT", 84101, 84199, &[801, 385]),
    ("Las Vegas", "NV", 89101, 89199, &[702, 725]),
    // North-eastern ZIP codes start with 0: these keep their leading zero as strings.
    ("Boston", "MA", 2108, 2298, &[617, 857]),
    ("Cambridge", "MA", 2138, 2142, &[617]),
    ("Providence", "RI", 2901, 2940, &[401]),
    ("Hartford", "CT", 6101, 6199, &[860]),
    ("Newark", "NJ", 7101, 7199, &[973, 862]),
    ("Burlington", "VT", 5401, 5408, &[802]),
    ("Portland", "ME", 4101, 4124, &[207]),
    ("Manchester", "NH", 3101, 3111, &[603]),
];

const STREETS: &[&str] = &[
    "Main Street",
    "Oak Avenue",
    "Maple Drive",
    "2nd Street",
    "Park Avenue",
    "Elm Street",
    "Washington Boulevard",
    "Lake View Road",
    "Hillcrest Lane",
    "Cedar Court",
    "Sunset Boulevard",
    "Broadway",
    "Pine Street",
    "River Road",
    "Highland Avenue",
    "Church Street",
    "Mill Lane",
    "Spring Street",
    "Jefferson Avenue",
    "Lincoln Way",
];

fn synthetic_profile(rng: &mut StdRng) -> anyhow::Result<UserProfile> {
    let first = FIRST_NAMES[rng.random_range(0..FIRST_NAMES.len())];
    let last = LAST_NAMES[rng.random_range(0..LAST_NAMES.len())];
    let (city, state, zip_lo, zip_hi, area_codes) = CITIES[rng.random_range(0..CITIES.len())];
    let zip = rng.random_range(zip_lo..=zip_hi);
    // ZIPs below 10000 have a leading zero and must be strings; a few others are ZIP+4 strings;
    // the rest are numbers like the canonical 10021.
    let postal = if zip < 10_000 {
        json!(format!("{zip:05}"))
    } else if rng.random_ratio(1, 10) {
        json!(format!("{zip:05}-{:04}", rng.random_range(0..10_000)))
    } else {
        json!(zip)
    };
    let street = format!(
        "{} {}",
        rng.random_range(1..=9_999),
        STREETS[rng.random_range(0..STREETS.len())]
    );
    let phones: Vec<String> = (0..rng.random_range(0..=3))
        .map(|_| {
            let area = area_codes[rng.random_range(0..area_codes.len())];
            let (a, b) = (rng.random_range(200..1000), rng.random_range(0..10_000));
            match rng.random_range(0..4) {
                0 => format!("{area} {a}-{b:04}"),
                1 => format!("({area}) {a}-{b:04}"),
                2 => format!("+1 {area} {a} {b:04}"),
                _ => format!("{area}{a}-{b:04}"),
            }
        })
        .collect();
    let doc = json!({"firstName": first, "lastName": last,
        "address": {"streetAddress": street, "city": city, "state": state, "postalCode": postal},
        "phoneNumbers": phones});
    UserProfile::parse(&doc, IdField::Forbidden)
        .map_err(|e| anyhow::anyhow!("generated an invalid synthetic user (a bug): {e:?}"))
}

/// Loads `args.users` synthetic users, showing progress, and says how fast it went.
/// Resolves `--dir` into the data directory, the shard groups or the primary the deployment's
/// API servers use.
async fn with_deployment(mut args: SeedArgs) -> anyhow::Result<SeedArgs> {
    let Some(dir) = args.dir.clone() else {
        return Ok(args);
    };
    if strata_deploy::state::read(&dir)?.is_none() {
        anyhow::bail!(
            "{} is not a running deployment (no state file): start one with `strata up --dir {}`, or pass --data / --postgres",
            dir.display(),
            dir.display()
        );
    }
    args.data = dir.join(strata_deploy::state::DATA_DIR);
    match strata_deploy::accounts::group_options(&dir)? {
        Some(options) => {
            args.postgres_shards = options.postgres_shards;
            args.map_home = options.map_home;
        }
        None => args.postgres = strata_deploy::accounts::primary_url(&dir).await?,
    }
    Ok(args)
}

pub async fn run(args: SeedArgs) -> anyhow::Result<()> {
    if args.users == 0 || args.users > MAX_USERS {
        anyhow::bail!(
            "--users must be between 1 and {MAX_USERS} (got {}): pass e.g. --users 1000000",
            args.users
        );
    }
    let args = with_deployment(args).await?;
    // A sharded data directory is loaded through its router (each batch split by the map).
    let sharded = if !args.postgres_shards.is_empty() {
        let mut options = strata_store::open::DataOptions::sqlite(&args.data);
        options.postgres_shards = args.postgres_shards.clone();
        options.map_home = args.map_home.clone();
        options.shards = args.shards;
        options.postgres_pool = 2;
        Some(options.open().await?)
    } else if args.postgres.is_none() {
        strata_store::open::open_sharded_sqlite(&args.data, args.shards).await?
    } else {
        None
    };
    let engines = match sharded {
        Some(engines) => engines,
        None => strata_store::open::open_engines(&args.data, args.postgres.as_deref(), 2).await?,
    };
    let (store, target) = (engines.store, engines.describe);
    let total = args.users;
    let batch_size = args.batch_size;
    let rng_seed = args.rng_seed;

    // Generate on a thread, two batches ahead of the inserts.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<anyhow::Result<Vec<User>>>(2);
    let generator = std::thread::spawn(move || {
        let ids = match SnowflakeGenerator::new(u64::from(SEED_NODE_ID)) {
            Ok(ids) => ids,
            Err(e) => {
                let _ = tx.blocking_send(Err(e.into()));
                return;
            }
        };
        let mut rng = StdRng::seed_from_u64(rng_seed);
        let mut left = total;
        while left > 0 {
            let n = left.min(batch_size);
            let batch: anyhow::Result<Vec<User>> = (0..n)
                .map(|_| {
                    let id = ids.next_id().map_err(|e| anyhow::anyhow!("{e}"))?;
                    Ok(User {
                        id: UserId(id),
                        profile: synthetic_profile(&mut rng)?,
                    })
                })
                .collect();
            let failed = batch.is_err();
            if tx.blocking_send(batch).is_err() || failed {
                return;
            }
            left -= n;
        }
    });

    let progress = Progress::new(total);
    let started = Instant::now();
    let mut loaded = 0u64;
    while let Some(batch) = rx.recv().await {
        let batch = batch?;
        let n = batch.len() as u64;
        store
            .insert_batch(batch)
            .await
            .with_context(|| format!("loading failed after {loaded} users"))?;
        loaded += n;
        progress.advance(loaded);
    }
    let _ = generator.join();
    progress.finish();
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "seeded {loaded} users into {target} in {secs:.1} s ({:.0} users/s)",
        loaded as f64 / secs.max(1e-9)
    );
    if loaded != total {
        anyhow::bail!("only {loaded} of {total} users were generated");
    }
    Ok(())
}

/// A progress bar on a terminal; a plain line every 5 s otherwise (logs, CI).
struct Progress {
    bar: Option<ProgressBar>,
    total: u64,
    started: Instant,
    last_line: std::sync::Mutex<Instant>,
}

impl Progress {
    fn new(total: u64) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total);
            let style = ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} users  {per_sec}  ETA {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Self {
            bar,
            total,
            started: Instant::now(),
            last_line: std::sync::Mutex::new(Instant::now()),
        }
    }

    fn advance(&self, done: u64) {
        if let Some(bar) = &self.bar {
            bar.set_position(done);
            return;
        }
        let mut last = self.last_line.lock().unwrap_or_else(|p| p.into_inner());
        if last.elapsed() >= Duration::from_secs(5) || done == self.total {
            *last = Instant::now();
            let secs = self.started.elapsed().as_secs_f64().max(1e-9);
            let rate = done as f64 / secs;
            let eta = (self.total - done) as f64 / rate.max(1e-9);
            eprintln!(
                "seeding: {done}/{} users ({:.0}%), {rate:.0} users/s, ETA {eta:.0} s",
                self.total,
                100.0 * done as f64 / self.total as f64
            );
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synthetic_users_are_valid_varied_and_reproducible() {
        let mut a = StdRng::seed_from_u64(7);
        let mut b = StdRng::seed_from_u64(7);
        let mut cities = std::collections::HashSet::new();
        let mut string_zips = 0;
        for _ in 0..2_000 {
            let p = synthetic_profile(&mut a).expect("valid");
            assert_eq!(
                p,
                synthetic_profile(&mut b).expect("valid"),
                "same seed, same users"
            );
            cities.insert(p.address.city.as_str().to_string());
            if matches!(
                p.address.postal_code,
                strata_core::user::PostalCode::Text(_)
            ) {
                string_zips += 1;
            }
        }
        assert!(cities.len() > 20, "varied cities");
        assert!(string_zips > 100, "leading-zero ZIPs come as strings");
    }
}
