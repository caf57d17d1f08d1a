//! The quota forecast of the budgets this client spends ([`mistral_core::forecast`]):
//! the computation is the core's, fed with every answer the client gets; this only asks
//! it at the current instant.

use crate::clock::now;

use mistral_core::forecast::Forecast;

use crate::Client;

impl Client {
    /// The quota forecast of `model`'s budget: for each limit the server announced, what
    /// it last said remains, when the limit resets, the rate it is being spent at (this
    /// client and its clones, or the server's own numbers when they show more: they
    /// count every program of the organisation) and when, at that rate, it runs out.
    /// `None` before the first answer for `model`. Its `Display` is a table.
    ///
    /// A monthly quota that will run out within a day at the current rate is also said
    /// once at WARN (target `mistral_async`).
    ///
    /// ```no_run
    /// # async fn demo(client: mistral_async::Client) -> Result<(), mistral_async::Error> {
    /// use mistral_async::{ChatRequest, Message};
    /// use mistral_async::mistral_core::forecast::RunsOut;
    ///
    /// let request = ChatRequest::new("mistral-small-latest", vec![Message::user("Hi")]);
    /// client.chat(request).await?;
    /// if let Some(forecast) = client.forecast("mistral-small-latest") {
    ///     println!("{forecast}");
    ///     if let Some(RunsOut::In(left)) = forecast.month().map(|m| m.runs_out) {
    ///         eprintln!("the month's tokens run out in {left:?}");
    ///     }
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn forecast(&self, model: &str) -> Option<Forecast> {
        self.inner.telemetry.forecast(model, now())
    }

    /// The forecasts of every budget this client has had an answer for, in name order
    /// (see [`Client::forecast`]).
    pub fn forecasts(&self) -> Vec<Forecast> {
        self.inner.telemetry.forecasts(now())
    }
}
