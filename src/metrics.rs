//! PROVISIONAL stub (issue 2).
