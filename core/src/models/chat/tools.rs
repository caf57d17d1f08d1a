//! Tools: definitions the model may call, the calls it makes, and `tool_choice`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::models::{char_count, de};

open_enum! {
    /// The `type` of a tool (only `function` exists today; the default).
    #[derive(Default)]
    pub enum ToolType {
        /// `function`
        #[default]
        Function => "function",
    }
}

/// A tool the model may call: `{type:"function", function:{name, description?, parameters}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tool {
    /// Always `function` today.
    #[serde(rename = "type", default)]
    pub kind: ToolType,
    /// The function definition.
    pub function: Function,
}

impl Tool {
    /// A function tool. `parameters` is a JSON Schema object.
    pub fn function(
        name: impl Into<String>,
        description: impl Into<String>,
        parameters: Value,
    ) -> Self {
        Self {
            kind: ToolType::Function,
            function: Function {
                name: name.into(),
                description: Some(description.into()),
                parameters,
                strict: None,
            },
        }
    }

    pub(crate) fn text_chars(&self) -> usize {
        let f = &self.function;
        char_count(&f.name)
            + f.description.as_deref().map_or(0, char_count)
            + char_count(&f.parameters.to_string())
    }
}

/// A function definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Function {
    /// Function name (`[a-zA-Z0-9_-]{1,64}`).
    pub name: String,
    /// What the function does, for the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// JSON Schema of the arguments.
    #[serde(default)]
    pub parameters: Value,
    /// Whether the arguments must follow the schema strictly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

/// A tool call made by the model.
///
/// Responses carry **no** `type` field (it decodes as `None`) and `arguments` is a JSON
/// string; an object is accepted too and kept as its JSON text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The call id (9 characters `[A-Za-z0-9]`); empty when the server sent none.
    #[serde(
        default,
        deserialize_with = "de::null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub id: String,
    /// `function` when present; responses omit it.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<ToolType>,
    /// The function called and its arguments.
    #[serde(default, deserialize_with = "de::null_default")]
    pub function: FunctionCall,
    /// Position of the call in a streamed delta, when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
}

impl ToolCall {
    /// A function call, as sent back in an assistant message.
    pub fn new(
        id: impl Into<String>,
        name: impl Into<String>,
        arguments: impl Into<String>,
    ) -> Self {
        Self {
            id: id.into(),
            kind: Some(ToolType::Function),
            function: FunctionCall {
                name: name.into(),
                arguments: arguments.into(),
            },
            index: None,
        }
    }

    pub(crate) fn text_chars(&self) -> usize {
        char_count(&self.id)
            + char_count(&self.function.name)
            + char_count(&self.function.arguments)
    }
}

/// The function part of a tool call.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionCall {
    /// Name of the function.
    #[serde(default, deserialize_with = "de::null_default")]
    pub name: String,
    /// The arguments as JSON text (an object on the wire is re-encoded as text).
    #[serde(default, deserialize_with = "de::string_or_json")]
    pub arguments: String,
}

impl FunctionCall {
    /// Decodes the arguments into `T`.
    pub fn parse_arguments<T: serde::de::DeserializeOwned>(&self) -> serde_json::Result<T> {
        let text = if self.arguments.trim().is_empty() {
            "{}"
        } else {
            self.arguments.as_str()
        };
        serde_json::from_str(text)
    }
}

/// `tool_choice`: a mode, or one named function the model must call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ToolChoice {
    /// `"auto" | "none" | "any" | "required"`.
    Mode(ToolChoiceMode),
    /// `{type:"function", function:{name}}`.
    Named(NamedToolChoice),
}

impl ToolChoice {
    /// Forces a call to the function `name`.
    pub fn function(name: impl Into<String>) -> Self {
        Self::Named(NamedToolChoice {
            kind: ToolType::Function,
            function: FunctionName { name: name.into() },
        })
    }
}

impl From<ToolChoiceMode> for ToolChoice {
    fn from(mode: ToolChoiceMode) -> Self {
        Self::Mode(mode)
    }
}

/// The tool-choice modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ToolChoiceMode {
    /// The model decides.
    Auto,
    /// No tool call.
    None,
    /// The model must call some tool.
    Any,
    /// The model must call some tool (alias of `any`).
    Required,
}

/// `{type:"function", function:{name}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamedToolChoice {
    /// Always `function`.
    #[serde(rename = "type", default)]
    pub kind: ToolType,
    /// The function to call.
    pub function: FunctionName,
}

/// `{name}` of a function.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionName {
    /// Function name.
    pub name: String,
}
