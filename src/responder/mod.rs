//! The endpoints run outside the firewall (STUN/TURN/TLS/WebSocket/HTTPS/UDP echo).
//! PROVISIONAL stub (issue 6).
