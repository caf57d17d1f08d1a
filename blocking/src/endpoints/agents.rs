//! Agents and conversations: `POST /v1/agents/completions`, `POST /v1/conversations`,
//! `POST /v1/conversations/{id}`.

use mistral_core::models::{
    AgentCompletionRequest, ChatResponse, ConversationAppendRequest, ConversationRequest,
    ConversationResponse,
};
use mistral_core::{ApiRequest, Error, Reply};

use crate::{ChatStream, Client};

impl Client {
    /// `POST /v1/agents/completions`: a completion by an agent, in the chat shape (never
    /// streamed: see [`Client::agent_completion_stream`]). Its budget is the agent's
    /// model when the request names it ([`AgentCompletionRequest::budget`]).
    ///
    /// ```no_run
    /// # fn demo(client: mistral_blocking::Client) -> Result<(), mistral_blocking::Error> {
    /// use mistral_blocking::{AgentCompletionRequest, Message};
    ///
    /// let request = AgentCompletionRequest::new("ag_0123", vec![Message::user("Hi")])
    ///     .budget("mistral-medium-latest");
    /// println!("{}", client.agent_completion(request)?.text().unwrap_or_default());
    /// # Ok(())
    /// # }
    /// ```
    pub fn agent_completion(
        &self,
        request: impl Into<AgentCompletionRequest>,
    ) -> Result<Reply<ChatResponse>, Error> {
        self.reply(&ApiRequest::agent_completion(
            &request.into().stream(false),
        )?)
    }

    /// `POST /v1/agents/completions` as a stream of chunks.
    pub fn agent_completion_stream(
        &self,
        request: impl Into<AgentCompletionRequest>,
    ) -> Result<ChatStream, Error> {
        self.stream(&ApiRequest::agent_completion(&request.into().stream(true))?)
    }

    /// `POST /v1/conversations`: starts a conversation with a model or an agent.
    ///
    /// ```no_run
    /// # fn demo(client: mistral_blocking::Client) -> Result<(), mistral_blocking::Error> {
    /// use mistral_blocking::{ConversationAppendRequest, ConversationRequest};
    ///
    /// let first = client.start_conversation(ConversationRequest::with_model("mistral-medium-latest", "Who wrote Candide?"))?;
    /// let next = ConversationAppendRequest::new("And Zadig?").budget("mistral-medium-latest");
    /// let second = client.append_conversation(&first.conversation_id, next)?;
    /// println!("{}", second.text().unwrap_or_default());
    /// # Ok(())
    /// # }
    /// ```
    pub fn start_conversation(
        &self,
        request: impl Into<ConversationRequest>,
    ) -> Result<Reply<ConversationResponse>, Error> {
        self.reply(&ApiRequest::conversation(&request.into())?)
    }

    /// `POST /v1/conversations/{id}`: appends to a conversation.
    pub fn append_conversation(
        &self,
        conversation_id: &str,
        request: impl Into<ConversationAppendRequest>,
    ) -> Result<Reply<ConversationResponse>, Error> {
        self.reply(&ApiRequest::conversation_append(
            conversation_id,
            &request.into(),
        )?)
    }
}
