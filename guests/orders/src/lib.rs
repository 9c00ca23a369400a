//! `orders`: the work of the `transform` benchmark, a realistic small
//! event-processing step. An order arrives as JSON (a few hundred bytes);
//! it is parsed, validated and enriched (line totals, tax by country, a
//! priority), and the result is serialized as JSON again.
//!
//! The same function runs inside the `transform` guest (compiled to
//! WebAssembly) and in the native baseline of the benchmark (compiled for
//! the host), so that the two differ only in where they run.

#![deny(missing_docs)]

use serde::{Deserialize, Serialize};

/// An order as it arrives.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Order {
    /// The order's id.
    pub id: String,
    /// The customer's id.
    pub customer: String,
    /// ISO 3166 alpha-2 country of delivery.
    pub country: String,
    /// ISO 4217 currency of the prices.
    pub currency: String,
    /// The lines of the order.
    pub items: Vec<Item>,
    /// A free-text note, optional.
    #[serde(default)]
    pub note: Option<String>,
}

/// One line of an order.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Item {
    /// The product's stock-keeping unit.
    pub sku: String,
    /// How many.
    pub quantity: u32,
    /// The price of one, in the currency's minor unit.
    pub unit_price: u64,
}

/// An order validated and enriched, as it is sent on.
#[derive(Debug, Serialize)]
pub struct Enriched<'a> {
    /// The order's id.
    pub id: &'a str,
    /// The customer's id.
    pub customer: &'a str,
    /// Country of delivery.
    pub country: &'a str,
    /// Currency of every amount.
    pub currency: &'a str,
    /// The lines, with their totals.
    pub lines: Vec<Line<'a>>,
    /// Sum of the lines, before tax.
    pub subtotal: u64,
    /// Tax rate applied, in basis points.
    pub tax_rate_bp: u32,
    /// Tax on the subtotal, rounded down.
    pub tax: u64,
    /// Subtotal and tax.
    pub total: u64,
    /// Units over all lines.
    pub units: u64,
    /// `high` from 100,000 minor units of total, else `normal`.
    pub priority: &'static str,
}

/// One line of an enriched order.
#[derive(Debug, Serialize)]
pub struct Line<'a> {
    /// The product's stock-keeping unit.
    pub sku: &'a str,
    /// How many.
    pub quantity: u32,
    /// The price of one.
    pub unit_price: u64,
    /// `quantity` × `unit_price`.
    pub total: u64,
}

/// Why an order was refused.
#[derive(Debug, PartialEq, Eq)]
pub struct Invalid(pub String);

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid order: {}", self.0)
    }
}

impl std::error::Error for Invalid {}

/// VAT in basis points by country; other countries pay none.
fn tax_rate_bp(country: &str) -> u32 {
    match country {
        "DE" => 1900,
        "FR" | "AT" | "GB" => 2000,
        "NL" | "ES" | "BE" => 2100,
        "IT" => 2200,
        "SE" | "DK" => 2500,
        "CH" => 810,
        _ => 0,
    }
}

/// Checks an order's fields; the first problem found is the error.
fn validate(order: &Order) -> Result<(), Invalid> {
    let invalid = |why: &str| Err(Invalid(why.to_string()));
    if order.id.is_empty() || order.id.len() > 64 {
        return invalid("id must have 1 to 64 bytes");
    }
    if order.customer.is_empty() {
        return invalid("customer is empty");
    }
    if order.country.len() != 2 || !order.country.bytes().all(|b| b.is_ascii_uppercase()) {
        return invalid("country is not an ISO 3166 alpha-2 code");
    }
    if order.currency.len() != 3 || !order.currency.bytes().all(|b| b.is_ascii_uppercase()) {
        return invalid("currency is not an ISO 4217 code");
    }
    if order.items.is_empty() || order.items.len() > 100 {
        return invalid("an order has 1 to 100 items");
    }
    for item in &order.items {
        if item.sku.is_empty() {
            return invalid("an item has no sku");
        }
        if item.quantity == 0 || item.quantity > 10_000 {
            return invalid("a quantity is not between 1 and 10,000");
        }
        if item.unit_price > 100_000_000 {
            return invalid("a unit price is over 1,000,000.00");
        }
    }
    Ok(())
}

/// Validates and enriches `order`.
pub fn enrich(order: &Order) -> Result<Enriched<'_>, Invalid> {
    validate(order)?;
    let lines: Vec<Line<'_>> = order
        .items
        .iter()
        .map(|item| Line {
            sku: &item.sku,
            quantity: item.quantity,
            unit_price: item.unit_price,
            total: u64::from(item.quantity) * item.unit_price,
        })
        .collect();
    let subtotal: u64 = lines.iter().map(|l| l.total).sum();
    let rate = tax_rate_bp(&order.country);
    let tax = subtotal * u64::from(rate) / 10_000;
    let total = subtotal + tax;
    Ok(Enriched {
        id: &order.id,
        customer: &order.customer,
        country: &order.country,
        currency: &order.currency,
        units: order.items.iter().map(|i| u64::from(i.quantity)).sum(),
        lines,
        subtotal,
        tax_rate_bp: rate,
        tax,
        total,
        priority: if total >= 100_000 { "high" } else { "normal" },
    })
}

/// The whole step: JSON order in, enriched JSON order out.
pub fn transform(json: &[u8]) -> Result<Vec<u8>, Invalid> {
    let order: Order = serde_json::from_slice(json).map_err(|e| Invalid(e.to_string()))?;
    let enriched = enrich(&order)?;
    serde_json::to_vec(&enriched).map_err(|e| Invalid(e.to_string()))
}

/// The `i`-th order of the benchmark: valid, about 300 bytes, varying in
/// country and lines.
pub fn sample(i: usize) -> Vec<u8> {
    const COUNTRIES: [&str; 6] = ["DE", "FR", "NL", "US", "IT", "SE"];
    let lines = 1 + i % 4;
    let items: Vec<String> = (0..lines)
        .map(|l| {
            format!(
                r#"{{"sku":"SKU-{:05}","quantity":{},"unit_price":{}}}"#,
                (i * 7 + l) % 100_000,
                1 + (i + l) % 5,
                199 + ((i * 31 + l * 17) % 50_000)
            )
        })
        .collect();
    format!(
        r#"{{"id":"ord-{i:08}","customer":"cust-{:06}","country":"{}","currency":"EUR","items":[{}],"note":"leave at the door"}}"#,
        i % 250_000,
        COUNTRIES[i % COUNTRIES.len()],
        items.join(",")
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_is_enriched() {
        let out = transform(&sample(1)).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        // sample(1): FR, 2 lines: 2 × 230 and 3 × 247.
        assert_eq!(v["country"], "FR");
        assert_eq!(v["subtotal"], 2 * 230 + 3 * 247);
        assert_eq!(v["tax_rate_bp"], 2000);
        assert_eq!(v["tax"], (2 * 230 + 3 * 247) * 2000 / 10_000);
        assert_eq!(v["units"], 5);
        assert_eq!(v["priority"], "normal");
        assert!((200..500).contains(&sample(1).len()), "{}", sample(1).len());
    }

    #[test]
    fn every_sample_is_valid() {
        for i in 0..1000 {
            transform(&sample(i)).unwrap_or_else(|e| panic!("sample {i}: {e}"));
        }
    }

    #[test]
    fn bad_orders_are_refused_with_the_reason() {
        let bad = br#"{"id":"x","customer":"c","country":"de","currency":"EUR","items":[{"sku":"a","quantity":1,"unit_price":1}]}"#;
        assert_eq!(
            transform(bad).unwrap_err().0,
            "country is not an ISO 3166 alpha-2 code"
        );
        let zero = br#"{"id":"x","customer":"c","country":"DE","currency":"EUR","items":[{"sku":"a","quantity":0,"unit_price":1}]}"#;
        assert!(transform(zero).unwrap_err().0.contains("quantity"));
        assert!(transform(b"not json").is_err());
        assert!(transform(br#"{"id":"x","extra":1}"#).is_err());
    }
}
