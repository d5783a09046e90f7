//! A NIP-46 remote signer (rust-nostr's nostr-connect bunker) on a test relay: the agent's
//! key lives only there. Kept apart from `common` so that only the test binaries that play
//! agents build nostr-connect.
#![allow(dead_code, clippy::expect_used)]

use std::time::Duration;

use nostr_connect::client::NostrConnect;
use nostr_connect::signer::{
    NostrConnectKeys, NostrConnectRemoteSigner, NostrConnectSignerActions,
};
use nostr_sdk::nips::nip46::{NostrConnectRequest, NostrConnectURI};
use nostr_sdk::prelude::*;

/// How long one NIP-46 request may take once the bunker is known to listen.
pub const SIGNER_TIMEOUT: Duration = Duration::from_secs(30);

/// The bunker's owner approves every request (a test has nobody to ask).
struct ApproveAll;

impl NostrConnectSignerActions for ApproveAll {
    fn approve(&self, _client: &PublicKey, _request: &NostrConnectRequest) -> bool {
        true
    }
}

/// A NIP-46 remote signer holding the agent's key, serving on a relay.
pub struct Bunker {
    /// The `bunker://` URI a client connects with.
    pub uri: NostrConnectURI,
    /// The agent's public key, for the test's own assertions only: the agent side learns it
    /// from the bunker (`get_public_key`).
    pub user: PublicKey,
    task: tokio::task::JoinHandle<()>,
}

impl Bunker {
    /// Starts the bunker on `relay` and returns once it answers.
    pub async fn start(relay: &RelayUrl) -> Self {
        let keys = NostrConnectKeys {
            signer: Keys::generate(),
            user: Keys::generate(),
        };
        let user = keys.user.public_key();
        let secret = Keys::generate().public_key().to_hex()[..16].to_owned();
        let signer = NostrConnectRemoteSigner::new(keys, [relay.clone()], Some(secret), None)
            .expect("a bunker");
        let uri = signer.bunker_uri();
        let task = tokio::spawn(async move {
            signer.serve(ApproveAll).await.expect("bunker serves");
        });
        // NIP-46 messages are ephemeral: one sent before the bunker subscribed is lost. Probe
        // with short-lived clients until it answers, then connect for real.
        for _ in 0..50 {
            let probe =
                NostrConnect::new(uri.clone(), Keys::generate(), Duration::from_secs(1), None)
                    .expect("a probe");
            let answered = probe.get_public_key().await.is_ok();
            probe.shutdown().await;
            if answered {
                return Self { uri, user, task };
            }
        }
        panic!("the bunker never answered");
    }

    /// A NIP-46 client session on the bunker: the only signer the agent has.
    pub fn connect(&self) -> NostrConnect {
        NostrConnect::new(self.uri.clone(), Keys::generate(), SIGNER_TIMEOUT, None)
            .expect("a NIP-46 client")
    }
}

impl Drop for Bunker {
    fn drop(&mut self) {
        self.task.abort();
    }
}
