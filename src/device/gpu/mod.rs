//! The op set on a GPU, written once over a small `Launcher` trait; `cuda.rs` drives a real
//! device through cudarc, `emu.rs` runs the same kernels on the emulated device.
