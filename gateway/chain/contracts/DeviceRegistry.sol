// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

/// @title EdgeKeep device registry
/// @notice Maps a device id to its ES256 (P-256) public key and owner. The id is not chosen
/// freely: it is the first 8 bytes of sha256(pubkey), so an id names exactly one key.
contract DeviceRegistry {
    struct Device {
        bytes pubkey; // 65-byte uncompressed SEC1 point: 0x04 || X || Y
        address owner;
        bool active;
        uint64 registeredAt; // block timestamp; 0 means never registered
    }

    address public immutable admin;
    mapping(address => bool) public isRegistrar;
    mapping(bytes8 => Device) private _devices;

    event DeviceRegistered(bytes8 indexed id, address indexed owner, bytes pubkey);
    event DeviceRevoked(bytes8 indexed id);
    event RegistrarAdded(address indexed registrar);
    event RegistrarRemoved(address indexed registrar);

    error NotAdmin(address caller);
    error NotRegistrar(address caller);
    error NotOwnerOrRegistrar(address caller);
    error BadPublicKey();
    error IdMismatch(bytes8 id, bytes8 expected);
    error ZeroOwner();
    error AlreadyRegistered(bytes8 id);
    error UnknownDevice(bytes8 id);
    error AlreadyRevoked(bytes8 id);

    constructor() {
        admin = msg.sender;
        isRegistrar[msg.sender] = true;
        emit RegistrarAdded(msg.sender);
    }

    function addRegistrar(address registrar) external {
        if (msg.sender != admin) revert NotAdmin(msg.sender);
        isRegistrar[registrar] = true;
        emit RegistrarAdded(registrar);
    }

    function removeRegistrar(address registrar) external {
        if (msg.sender != admin) revert NotAdmin(msg.sender);
        isRegistrar[registrar] = false;
        emit RegistrarRemoved(registrar);
    }

    /// @notice Register a device key. A revoked id stays taken: a revoked key never comes back.
    function register(bytes8 id, bytes calldata pubkey, address owner) external {
        if (!isRegistrar[msg.sender]) revert NotRegistrar(msg.sender);
        if (pubkey.length != 65 || pubkey[0] != 0x04) revert BadPublicKey();
        bytes8 expected = bytes8(sha256(pubkey));
        if (id != expected) revert IdMismatch(id, expected);
        if (owner == address(0)) revert ZeroOwner();
        if (_devices[id].registeredAt != 0) revert AlreadyRegistered(id);
        _devices[id] = Device(pubkey, owner, true, uint64(block.timestamp));
        emit DeviceRegistered(id, owner, pubkey);
    }

    function revoke(bytes8 id) external {
        Device storage d = _devices[id];
        if (d.registeredAt == 0) revert UnknownDevice(id);
        if (msg.sender != d.owner && !isRegistrar[msg.sender]) revert NotOwnerOrRegistrar(msg.sender);
        if (!d.active) revert AlreadyRevoked(id);
        d.active = false;
        emit DeviceRevoked(id);
    }

    /// @return pubkey empty and registeredAt 0 when the id was never registered
    function deviceKey(bytes8 id)
        external
        view
        returns (bytes memory pubkey, address owner, bool active, uint64 registeredAt)
    {
        Device storage d = _devices[id];
        return (d.pubkey, d.owner, d.active, d.registeredAt);
    }
}
