//! The Mistral API emulator. Filled by the emulator issue.
