//! The anomaly-detection methods built on the teacher, the students and the training loop.

pub mod dual_student;
