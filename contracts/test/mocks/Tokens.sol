// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {ERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/ERC20Permit.sol";

/// @notice 6-decimal EIP-2612 stablecoin for tests and the demo; anyone may mint.
contract TestStablecoin is ERC20Permit {
    constructor() ERC20("Test Stablecoin", "TUSD") ERC20Permit("Test Stablecoin") {}

    /// @notice Mints `amount` to `to` (test token: unrestricted).
    /// @param to Receiver.
    /// @param amount Amount in 6-decimal units.
    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }

    /// @notice 6 decimals, like USDC.
    /// @return 6
    function decimals() public pure override returns (uint8) {
        return 6;
    }
}

/// @notice Plain 18-decimal mintable ERC-20.
contract MintableToken is ERC20 {
    constructor() ERC20("Mintable", "MNT") {}

    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }
}

/// @notice Burns 1% of every transfer (fee-on-transfer / deflationary token).
contract FeeToken is ERC20 {
    constructor() ERC20("Fee", "FEE") {}

    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }

    function _update(address from, address to, uint256 value) internal override {
        if (from != address(0) && to != address(0)) {
            uint256 fee = value / 100;
            super._update(from, address(0), fee);
            value -= fee;
        }
        super._update(from, to, value);
    }
}

/// @notice Minimal balances/allowances shared by the odd tokens below.
abstract contract OddTokenBase {
    mapping(address => uint256) public balanceOf;
    mapping(address => mapping(address => uint256)) public allowance;
    uint256 public totalSupply;
    /// @notice Accounts whose incoming transfers fail (a USDC-style blacklist).
    mapping(address => bool) public blocked;

    function mint(address to, uint256 amount) external {
        balanceOf[to] += amount;
        totalSupply += amount;
    }

    function setBlocked(address account, bool isBlocked) external {
        blocked[account] = isBlocked;
    }

    function _move(address from, address to, uint256 amount) internal returns (bool) {
        if (blocked[to] || balanceOf[from] < amount) return false;
        balanceOf[from] -= amount;
        balanceOf[to] += amount;
        return true;
    }

    function _spend(address owner, uint256 amount) internal returns (bool) {
        if (allowance[owner][msg.sender] < amount) return false;
        allowance[owner][msg.sender] -= amount;
        return true;
    }
}

/// @notice USDT-style token: transfer/transferFrom/approve return nothing and revert on failure.
contract NoReturnToken is OddTokenBase {
    function approve(address spender, uint256 amount) external {
        allowance[msg.sender][spender] = amount;
    }

    function transfer(address to, uint256 amount) external {
        require(_move(msg.sender, to, amount), "transfer failed");
    }

    function transferFrom(address from, address to, uint256 amount) external {
        require(_spend(from, amount) && _move(from, to, amount), "transferFrom failed");
    }
}

/// @notice Token that returns false instead of reverting when a transfer fails.
contract FalseReturnToken is OddTokenBase {
    function approve(address spender, uint256 amount) external returns (bool) {
        allowance[msg.sender][spender] = amount;
        return true;
    }

    function transfer(address to, uint256 amount) external returns (bool) {
        return _move(msg.sender, to, amount);
    }

    function transferFrom(address from, address to, uint256 amount) external returns (bool) {
        if (!_spend(from, amount)) return false;
        return _move(from, to, amount);
    }
}

/// @notice ERC-20 that calls back into a target (PaymentChannels) during transfer and
/// transferFrom, and records what the re-entrant call returned. The records fit the payout gas
/// budget (a transfer from PaymentChannels gets PAYOUT_GAS): the flags share the target's slot
/// and the revert data is kept as its hash.
contract ReentrantToken is ERC20 {
    address public target;
    bool public attempted;
    bool public reentrySucceeded;
    bytes4 public reentrySelector;
    bytes32 public reentryReturnHash;
    bytes public callData;

    constructor() ERC20("Reentrant", "REE") {}

    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }

    /// @notice Lets this token contract itself act as a payer (for re-entrant opens).
    function approveFromSelf(address spender, uint256 amount) external {
        _approve(address(this), spender, amount);
    }

    /// @notice Arms the hook: the next transfer calls `target` with `data`.
    function arm(address target_, bytes calldata data) external {
        target = target_;
        callData = data;
    }

    function _update(address from, address to, uint256 value) internal override {
        super._update(from, to, value);
        address t = target;
        if (t != address(0) && from != address(0)) {
            target = address(0); // disarm first: the re-entrant call may transfer again
            (bool ok, bytes memory ret) = t.call(callData);
            attempted = true;
            reentrySucceeded = ok;
            reentrySelector = bytes4(ret);
            reentryReturnHash = keccak256(ret);
        }
    }
}
