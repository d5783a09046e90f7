//! soko's SMS notices: logged with the number masked, and sent through Africa's Talking's SMS
//! API when it is configured.

use std::fmt;
use std::time::Duration;

use super::gateway::is_phone;
use crate::proto::ussd::SmsNotice;

/// Africa's Talking's live SMS endpoint (the sandbox is
/// `https://api.sandbox.africastalking.com/version1/messaging`).
pub const AFRICAS_TALKING_SMS_URL: &str = "https://api.africastalking.com/version1/messaging";

/// How long one SMS API call may take.
const SMS_TIMEOUT: Duration = Duration::from_secs(15);

/// An SMS API account.
#[derive(Clone)]
pub struct SmsConfig {
    /// The messaging endpoint.
    pub url: String,
    /// The account's username.
    pub username: String,
    /// The account's API key (sent as the `apiKey` header; never logged).
    pub api_key: String,
    /// The registered sender id or short code, if any (`from`).
    pub from: Option<String>,
}

impl fmt::Debug for SmsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmsConfig")
            .field("url", &self.url)
            .field("username", &self.username)
            .field("api_key", &"<redacted>")
            .field("from", &self.from)
            .finish()
    }
}

/// Why an SMS was not sent.
#[derive(Debug, thiserror::Error)]
pub enum SmsError {
    /// The notice's number is not a phone number.
    #[error("the notice's phone is not a phone number")]
    BadPhone,
    /// The HTTP call failed.
    #[error("SMS API call failed: {0}")]
    Http(String),
    /// The API answered with an error status.
    #[error("SMS API answered HTTP {0}")]
    Status(u16),
    /// The API accepted the call but not the message for this recipient.
    #[error("SMS API did not accept the message: {0}")]
    Rejected(String),
}

/// Where notices go.
#[derive(Debug, Clone)]
pub struct SmsSender {
    http: reqwest::Client,
    config: Option<SmsConfig>,
}

impl SmsSender {
    /// A sender through `config`, or one that only logs.
    pub fn new(config: Option<SmsConfig>) -> Result<Self, SmsError> {
        let http = reqwest::Client::builder()
            .timeout(SMS_TIMEOUT)
            .build()
            .map_err(|e| SmsError::Http(e.to_string()))?;
        Ok(Self { http, config })
    }

    /// Logs `sms` (number masked) and sends it when an API is configured.
    pub async fn deliver(&self, sms: &SmsNotice) {
        let to = mask_phone(&sms.phone);
        let Some(config) = &self.config else {
            tracing::info!(%to, chars = sms.text.chars().count(), "SMS notice from soko (SMS API not configured: not sent)");
            return;
        };
        match self.send(config, sms).await {
            Ok(()) => tracing::info!(%to, "SMS notice sent"),
            Err(e) => tracing::warn!(%to, error = %e, "SMS notice not sent"),
        }
    }

    async fn send(&self, config: &SmsConfig, sms: &SmsNotice) -> Result<(), SmsError> {
        // The API takes a comma-separated list in `to`: only a plain number may go there.
        if !is_phone(&sms.phone) {
            return Err(SmsError::BadPhone);
        }
        let mut form = vec![
            ("username", config.username.as_str()),
            ("to", sms.phone.as_str()),
            ("message", sms.text.as_str()),
        ];
        if let Some(from) = &config.from {
            form.push(("from", from.as_str()));
        }
        let response = self
            .http
            .post(&config.url)
            .header("apiKey", &config.api_key)
            .header(reqwest::header::ACCEPT, "application/json")
            .form(&form)
            .send()
            .await
            // reqwest's errors name the URL, never headers or the body.
            .map_err(|e| SmsError::Http(e.without_url().to_string()))?;
        let status = response.status();
        if !status.is_success() {
            return Err(SmsError::Status(status.as_u16()));
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| SmsError::Http(e.without_url().to_string()))?;
        match recipient_status(&body) {
            Some(status) if status != "Success" => Err(SmsError::Rejected(status)),
            _ => Ok(()),
        }
    }
}

/// The first recipient's `status` in an Africa's Talking answer
/// (`{"SMSMessageData":{"Recipients":[{"status":"Success",…}]}}`), if it has one.
fn recipient_status(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    value
        .pointer("/SMSMessageData/Recipients/0/status")?
        .as_str()
        .map(str::to_owned)
}

/// A phone number fit for a log line: `+254711000111` → `+2547•••••111`. At least five
/// characters are always hidden; at most the country and network prefix and the last three
/// digits show.
pub fn mask_phone(phone: &str) -> String {
    let chars: Vec<char> = phone.chars().collect();
    let (head, tail) = if chars.len() >= 8 {
        ((chars.len() - 8).min(5), 3)
    } else {
        (0, 2)
    };
    if chars.len() <= head + tail {
        return "•".repeat(chars.len());
    }
    let mut masked: String = chars[..head].iter().collect();
    masked.extend(std::iter::repeat_n('•', chars.len() - head - tail));
    masked.extend(&chars[chars.len() - tail..]);
    masked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_are_masked() {
        assert_eq!(mask_phone("+254711000111"), "+2547•••••111");
        assert_eq!(mask_phone("254711000111"), "2547•••••111");
        assert_eq!(mask_phone("0711000111"), "07•••••111");
        assert_eq!(mask_phone("+2547110001119999"), "+2547•••••••••999");
        assert_eq!(mask_phone("12345"), "•••45");
        assert_eq!(mask_phone("12"), "••");
        assert_eq!(mask_phone(""), "");
    }

    #[test]
    fn the_api_key_stays_out_of_debug_output() {
        let config = SmsConfig {
            url: AFRICAS_TALKING_SMS_URL.into(),
            username: "sandbox".into(),
            api_key: "atsk_secret".into(),
            from: None,
        };
        assert!(!format!("{config:?}").contains("atsk_secret"));
    }

    #[test]
    fn recipient_status_is_read_when_present() {
        let ok = br#"{"SMSMessageData":{"Message":"Sent to 1/1","Recipients":[{"statusCode":101,"status":"Success"}]}}"#;
        assert_eq!(recipient_status(ok).as_deref(), Some("Success"));
        let bad = br#"{"SMSMessageData":{"Recipients":[{"status":"InvalidPhoneNumber"}]}}"#;
        assert_eq!(recipient_status(bad).as_deref(), Some("InvalidPhoneNumber"));
        assert_eq!(recipient_status(b"not json"), None);
    }
}
