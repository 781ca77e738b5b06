//! Registration of an authenticated connection with the hub, and the revocation re-check
//! right after it. The revocation watcher kicks the registered connections of a device
//! revoked (or an account disabled) by an operator; a revocation that lands between a
//! connection's credential check and its registration is not among them, so each new
//! registration checks its own device once more.

use super::Kicks;
use crate::auth::AuthedUser;
use crate::core::hub::SessionGuard;
use crate::core::ServerState;
use crate::store::StoreError;

/// Registers `user`'s connection with the hub, then re-checks its device. `Ok(Some)`: the
/// registration (dropping the guard unregisters) and the connection's kicks. `Ok(None)`:
/// the device is no longer valid, and the registration is dropped again.
pub(crate) async fn register_session(
    state: &ServerState,
    user: &AuthedUser,
) -> Result<Option<(SessionGuard, Kicks)>, StoreError> {
    let (guard, kicks) = state.hub.register(user.user_id(), user.device_id());
    let device = user.device_id();
    let valid = state.store.valid_devices(&[device]).await?;
    Ok(valid
        .contains(&device)
        .then(|| (guard, Kicks::from_hub(kicks))))
}
