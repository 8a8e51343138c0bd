// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

/// The part of ProofAnchor that StorageAudit relies on.
interface IProofAnchor {
    function isAnchorer(address who) external view returns (bool);
    function verifyAnchored(uint64 epoch, bytes32 leaf, uint256 index, uint256 size, bytes32[] calldata proof)
        external view returns (bool);
    function verifyInclusion(bytes32 root, bytes32 leaf, uint256 index, uint256 size, bytes32[] calldata proof)
        external pure returns (bool);
}

/// @title EdgeKeep storage audits
/// @notice The Keeper's audit records, one Merkle root per audit, and the on-chain check of a
/// stored chunk against the epoch roots of ProofAnchor. Trees are ProofAnchor's (RFC 9162).
contract StorageAudit {
    struct Audit {
        bytes32 root; // Merkle root over the audit's records; zero means no such audit
        bytes32 seedHash; // blockhash(seedBlock), read by this contract: the challenges' seed
        uint64 seedBlock;
        uint32 challenges;
        uint32 failed;
        uint64 blockNumber;
    }

    /// A camera chunk's proof: the chunk in its object's tree, the object's root inside the
    /// signed manifest, the manifest in the anchored epoch tree.
    struct ChunkProof {
        uint64 epoch;
        bytes manifest; // the manifest message (COSE_Sign1) as stored
        uint256 rootOffset; // where the object root sits in it, after its CBOR key 6 and bstr(32) head
        uint256 leaf; // the manifest's leaf index in the epoch tree
        uint256 size; // leaves in the epoch tree
        bytes32[] epochPath;
        bytes32 chunkHash; // sha256 of the chunk's COSE_Encrypt0
        uint256 chunkIndex;
        uint256 chunkCount;
        bytes32[] chunkPath;
    }

    IProofAnchor public immutable proofAnchor;
    mapping(uint64 => Audit) private _audits;

    event Audited(uint64 indexed audit, uint64 seedBlock, bytes32 root, uint32 challenges, uint32 failed);

    error NotKeeper(address caller);
    error ZeroRoot();
    error SeedUnavailable(uint64 seedBlock);
    error AuditConflict(uint64 audit, bytes32 recordedRoot);

    constructor(IProofAnchor anchor_) {
        proofAnchor = anchor_;
    }

    /// @notice Record an audit once; its Keeper must be an anchorer of ProofAnchor. The seed
    /// block must be one of the last 256, so the audit cannot have been prepared in advance.
    /// Sending the same audit again is a no-op (a retry after a crash).
    function record(uint64 audit, uint64 seedBlock, bytes32 root, uint32 challenges, uint32 failed) external {
        if (!proofAnchor.isAnchorer(msg.sender)) revert NotKeeper(msg.sender);
        if (root == bytes32(0)) revert ZeroRoot();
        Audit storage a = _audits[audit];
        if (a.root != bytes32(0)) {
            if (a.root == root && a.seedBlock == seedBlock) return;
            revert AuditConflict(audit, a.root);
        }
        bytes32 seedHash = blockhash(seedBlock);
        if (seedHash == bytes32(0)) revert SeedUnavailable(seedBlock);
        _audits[audit] = Audit(root, seedHash, seedBlock, challenges, failed, uint64(block.number));
        emit Audited(audit, seedBlock, root, challenges, failed);
    }

    function auditOf(uint64 audit)
        external
        view
        returns (bytes32 root, bytes32 seedHash, uint64 seedBlock, uint32 challenges, uint32 failed, uint64 blockNumber)
    {
        Audit storage a = _audits[audit];
        return (a.root, a.seedHash, a.seedBlock, a.challenges, a.failed, a.blockNumber);
    }

    /// @notice True when `recordHash` is record `index` of the recorded audit's tree.
    function verifyRecord(uint64 audit, bytes32 recordHash, uint256 index, uint256 size, bytes32[] calldata proof)
        external
        view
        returns (bool)
    {
        Audit storage a = _audits[audit];
        if (a.root == bytes32(0) || size != a.challenges) return false;
        return proofAnchor.verifyInclusion(a.root, recordHash, index, size, proof);
    }

    /// @notice True when the chunk is part of an object whose manifest is in an anchored epoch.
    /// The device's signature on the manifest is checked off chain (P-256 is not in this EVM).
    function verifyChunk(ChunkProof calldata p) external view returns (bool) {
        bytes calldata m = p.manifest;
        uint256 at = p.rootOffset;
        if (at < 3 || at + 32 > m.length) return false;
        if (m[at - 3] != 0x06 || m[at - 2] != 0x58 || m[at - 1] != 0x20) return false;
        bytes32 objectRoot = bytes32(m[at:at + 32]);
        return proofAnchor.verifyAnchored(p.epoch, sha256(m), p.leaf, p.size, p.epochPath)
            && proofAnchor.verifyInclusion(objectRoot, p.chunkHash, p.chunkIndex, p.chunkCount, p.chunkPath);
    }
}
