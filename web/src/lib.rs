//! Hearth in the browser. The page (web/app.js) draws the interface; a Web Worker
//! (web/worker.js) loads this module and drives a [`Session`]: WebGPU through hearth-core,
//! the same loading, training and generation code as the `hearth` CLI.

mod session;

pub use session::Session;
use wasm_bindgen::prelude::*;

/// Panics reach the console as text instead of "unreachable executed".
#[wasm_bindgen(start)]
pub fn start() {
    std::panic::set_hook(Box::new(|info| web_sys::console::error_1(&format!("hearth panicked: {info}").into())));
}
