// SPDX-License-Identifier: MIT
pragma solidity 0.8.30;

/// @notice How a hostile payout receiver (token or ETH account) answers a payout.
/// Honest: behaves; Revert: reverts with a short reason; BurnGas: loops until out of gas;
/// RevertBomb / ReturnBomb: reverts / returns `bombSize` bytes (return data a caller that copies it
/// pays for); ReturnFalse / ReturnNothing / ReturnGarbage: ERC-20 answers other than `true`
/// (tokens only); NeedsFullBudget: succeeds only when it has at least `minGas` at entry and
/// otherwise burns what it got, i.e. an honest receiver whose payout costs the whole budget;
/// Probe: honest, and records the gas it had at entry in `lastEntryGas` (to calibrate `minGas`).
enum Mood {
    Honest,
    Revert,
    BurnGas,
    RevertBomb,
    ReturnBomb,
    ReturnFalse,
    ReturnNothing,
    ReturnGarbage,
    NeedsFullBudget,
    Probe
}

/// @dev Runs the frame out of gas in one step: a memory write at a 1 TB offset costs more than
/// any block's gas. Out of gas is out of gas to the caller, whether reached by this or by an
/// infinite loop; one step instead of ~8,000 loop iterations per burnt payout keeps traced test
/// runs (the invariant campaign burns thousands of payouts) fast.
function burnAllGas() pure {
    assembly {
        mstore(0xffffffffff, 1)
    }
}

/// @notice ERC-20 whose `transfer` (what PaymentChannels pays out with) misbehaves as told;
/// `transferFrom`, `approve` and `balanceOf` are honest so channels can be opened with it.
contract MoodyToken {
    mapping(address => uint256) public balanceOf;
    mapping(address => mapping(address => uint256)) public allowance;
    Mood public mood;
    uint256 public bombSize = 40_000;
    uint256 public minGas;
    uint256 public lastEntryGas;

    event Transfer(address indexed from, address indexed to, uint256 value);

    /// @notice Mints `amount` to `to` (test token: unrestricted).
    function mint(address to, uint256 amount) external {
        balanceOf[to] += amount;
    }

    /// @notice Sets how the next transfers behave.
    function setMood(Mood m) external {
        mood = m;
    }

    /// @notice Sets the size of bombs and the gas a NeedsFullBudget transfer needs at entry.
    function configure(uint256 bombSize_, uint256 minGas_) external {
        (bombSize, minGas) = (bombSize_, minGas_);
    }

    function approve(address spender, uint256 amount) external returns (bool) {
        allowance[msg.sender][spender] = amount;
        return true;
    }

    function transferFrom(address from, address to, uint256 amount) external returns (bool) {
        allowance[from][msg.sender] -= amount;
        _move(from, to, amount);
        return true;
    }

    function transfer(address to, uint256 amount) external returns (bool) {
        // first thing, so a Probe and a NeedsFullBudget call read it at the same point
        uint256 entry = gasleft();
        Mood m = mood;
        if (m == Mood.NeedsFullBudget) {
            if (entry < minGas) burnAllGas();
            m = Mood.Honest;
        }
        if (m == Mood.Probe) {
            lastEntryGas = entry;
            m = Mood.Honest;
        }
        if (m == Mood.Honest) {
            _move(msg.sender, to, amount);
            return true;
        }
        if (m == Mood.Revert) revert("MoodyToken: transfer refused");
        if (m == Mood.BurnGas) burnAllGas();
        uint256 size = bombSize;
        if (m == Mood.RevertBomb) {
            assembly ("memory-safe") {
                revert(0, size)
            }
        }
        if (m == Mood.ReturnBomb) {
            // a true first word followed by kilobytes: a "successful" transfer that only a caller
            // copying all return data would pay for
            _move(msg.sender, to, amount);
            assembly ("memory-safe") {
                mstore(0, 1)
                return(0, size)
            }
        }
        if (m == Mood.ReturnFalse) return false;
        if (m == Mood.ReturnNothing) {
            // USDT-style: no return data. Moves the funds, so for PaymentChannels this is a success.
            _move(msg.sender, to, amount);
            assembly ("memory-safe") {
                return(0, 0)
            }
        }
        // ReturnGarbage: one word that is neither 0 nor 1
        assembly ("memory-safe") {
            mstore(0, 0xdeadbeef)
            return(0, 32)
        }
    }

    function _move(address from, address to, uint256 amount) private {
        balanceOf[from] -= amount;
        balanceOf[to] += amount;
        emit Transfer(from, to, amount);
    }
}

/// @notice A contract account (payer or payee) whose `receive` misbehaves as told, and that can
/// make arbitrary calls as itself (open, closeByPayee, withdraw, ...).
contract MoodyReceiver {
    Mood public mood;
    uint256 public bombSize = 40_000;
    uint256 public minGas;
    uint256 public lastEntryGas;
    uint256 public received;

    /// @notice Sets how the next ETH payments are answered (the ERC-20-only moods act as Honest).
    function setMood(Mood m) external {
        mood = m;
    }

    /// @notice Sets the size of bombs and the gas a NeedsFullBudget payment needs at entry.
    function configure(uint256 bombSize_, uint256 minGas_) external {
        (bombSize, minGas) = (bombSize_, minGas_);
    }

    receive() external payable {
        uint256 entry = gasleft();
        Mood m = mood;
        if (m == Mood.NeedsFullBudget) {
            if (entry < minGas) burnAllGas();
            m = Mood.Honest;
        }
        if (m == Mood.Probe) {
            lastEntryGas = entry;
            m = Mood.Honest;
        }
        if (m == Mood.Revert) revert("MoodyReceiver: payment refused");
        if (m == Mood.BurnGas) burnAllGas();
        uint256 size = bombSize;
        if (m == Mood.RevertBomb) {
            assembly ("memory-safe") {
                revert(0, size)
            }
        }
        if (m == Mood.ReturnBomb) {
            assembly ("memory-safe") {
                return(0, size)
            }
        }
        // a storage write, so an accepted payment costs something like a real wallet contract's
        received += msg.value;
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
}

/// @notice ERC-20 that is honest and cheap when the transaction pays no gas price, as
/// `eth_estimateGas` without fee fields runs it, and burns its whole payout budget in a real
/// transaction. A `claimMany` whose gas limit is the estimate plus a margin then starves the
/// payout and reverts with `InsufficientGasForPayout` (issue 11, item 1): the attack a watchtower
/// must survive. With enough gas the payout is deferred to `owed` like any failed payout.
contract EstimateDodgingToken {
    mapping(address => uint256) public balanceOf;
    mapping(address => mapping(address => uint256)) public allowance;

    event Transfer(address indexed from, address indexed to, uint256 value);

    /// @notice Mints `amount` to `to` (test token: unrestricted).
    function mint(address to, uint256 amount) external {
        balanceOf[to] += amount;
    }

    function approve(address spender, uint256 amount) external returns (bool) {
        allowance[msg.sender][spender] = amount;
        return true;
    }

    function transferFrom(address from, address to, uint256 amount) external returns (bool) {
        allowance[from][msg.sender] -= amount;
        _move(from, to, amount);
        return true;
    }

    function transfer(address to, uint256 amount) external returns (bool) {
        if (tx.gasprice != 0) burnAllGas();
        _move(msg.sender, to, amount);
        return true;
    }

    function _move(address from, address to, uint256 amount) private {
        balanceOf[from] -= amount;
        balanceOf[to] += amount;
        emit Transfer(from, to, amount);
    }
}
