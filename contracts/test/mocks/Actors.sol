// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

/// @notice A contract account (payer or payee) that rejects ETH while `rejecting` is set, and
/// can make arbitrary calls (open, closeByPayee, withdraw, ...) as itself.
contract RevertingReceiver {
    bool public rejecting = true;

    error Rejected(uint256 value);

    receive() external payable {
        if (rejecting) revert Rejected(msg.value);
    }

    function setRejecting(bool on) external {
        rejecting = on;
    }

    /// @notice Calls `target` with `data` and `value`, bubbling up any revert.
    function exec(address target, uint256 value, bytes calldata data) external payable returns (bytes memory) {
        (bool ok, bytes memory ret) = target.call{value: value}(data);
        if (!ok) {
            assembly ("memory-safe") {
                revert(add(ret, 0x20), mload(ret))
            }
        }
        return ret;
    }

    /// @notice Approves `spender` on `token` (ERC-20 payer).
    function approve(address token, address spender, uint256 amount) external {
        (bool ok, ) = token.call(abi.encodeWithSignature("approve(address,uint256)", spender, amount));
        require(ok, "approve failed");
    }
}
