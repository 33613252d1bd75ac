//! Before/after comparison of two JSON reports. PROVISIONAL stub (issue 6).
